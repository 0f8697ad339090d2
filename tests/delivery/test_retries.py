"""Retries with backoff (released by the scheduler), dead letters, and redrive."""

from __future__ import annotations

import pytest

from tests.processes import wait_until


@pytest.fixture
def processes(shared_processes):
    """The module's tests share their worker and scheduler (`SharedProcesses`): none kills,
    stops or reconfigures them."""
    return shared_processes


@pytest.mark.single_redis
def test_fails_twice_then_succeeds_in_exactly_three_attempts_with_growing_backoff(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/flaky"),
                               retry_delay_ms=300, max_retry_attempts=3)
    processes.scheduler()
    processes.worker()
    webhook.script("/flaky", [500, 503])
    message_id = tenant.admin.post("/publish", {"topic": "orders", "payload": {"a": 1}}).json[
        "message_id"]

    webhook.wait_for("/flaky", 3)
    attempts = webhook.settle("/flaky", quiet_s=1.5)
    assert [r.attempt for r in attempts] == [1, 2, 3]
    assert {r.headers["x-mq-message-id"] for r in attempts} == {message_id}
    first_wait = attempts[1].at - attempts[0].at
    second_wait = attempts[2].at - attempts[1].at
    assert first_wait >= 0.3, first_wait         # retry_delay_ms
    assert second_wait >= 0.6, second_wait       # retry_delay_ms * 2
    assert second_wait > first_wait

    stats = wait_until(lambda: _stats(tenant, sub["id"], delivered_total=1, failed_total=2))
    assert stats["dead_lettered_total"] == 0
    records = tenant.admin.get(f"/subscriptions/{sub['id']}/deliveries").json["items"]
    assert sorted(r["status"] for r in records) == ["failed", "failed", "success"]
    assert tenant.admin.get(f"/subscriptions/{sub['id']}/dead-letters").json["items"] == []


def test_always_failing_ends_on_the_dead_letter_topic_after_max_retries(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    tenant.create_queue("orders.deadletter")
    sub = subscriptions.create("orders", "billing", webhook.url("/down"),
                               retry_delay_ms=100, max_retry_attempts=2)
    watcher = subscriptions.create("orders.deadletter", "ops", webhook.url("/dlq"))
    webhook.always("/down", 500)
    processes.scheduler()
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "orders", "payload": {"x": 1},
                                               "key": "k1", "headers": {"h": "v"}}).json

    letter = webhook.wait_for("/dlq", 1)[0].json
    assert [r.attempt for r in webhook.settle("/down")] == [1, 2, 3]
    assert letter["failure_reason"] == "error"
    assert letter["retry_count"] == 2
    assert letter["message_id"] == published["message_id"]
    assert letter["subscription_id"] == sub["id"]
    assert letter["original_topic"] == "orders"
    assert letter["original_offset"] == published["offset"]
    assert letter["original_partition"] == 0
    assert letter["payload"] == {"x": 1}
    assert letter["headers"] == {"h": "v"}
    assert letter["key"] == "k1"
    assert "500" in letter["error_message"]

    listed = tenant.admin.get(f"/subscriptions/{sub['id']}/dead-letters").json["items"]
    assert listed == [letter]
    assert watcher["id"] != sub["id"]
    wait_until(lambda: _stats(tenant, sub["id"], failed_total=3, dead_lettered_total=1))
    status = wait_until(lambda: _delivery(tenant, published["message_id"], sub["id"],
                                          "dead_letter"))
    assert status["attempts"] == 3
    # The dead-letter topic's message is a published message like any other.
    record = wait_until(lambda: _ok(tenant.admin.get(f"/messages/{letter['id']}")))
    assert record["topic"] == "orders.deadletter"
    assert record["payload"] == letter


def test_permanent_answer_is_dead_lettered_at_once(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/gone"), max_retry_attempts=5)
    webhook.always("/gone", 404)
    processes.scheduler()
    processes.worker()
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"x": 2}})

    items = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    assert [r.attempt for r in webhook.settle("/gone")] == [1]
    assert items[0]["failure_reason"] == "permanent"
    assert items[0]["retry_count"] == 0
    assert items[0]["error_message"] == "HTTP 404"
    # The dead-letter topic was created on first use.
    assert tenant.admin.get("/queues/orders.deadletter").json["stats"]["length"] == 1


def test_redrive_delivers_again_to_that_subscription_only(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    failing = subscriptions.create("orders", "billing", webhook.url("/billing"))
    subscriptions.create("orders", "shipping", webhook.url("/shipping"))
    webhook.always("/billing", 422)
    processes.scheduler()
    processes.worker()
    for n in range(3):
        tenant.admin.post("/publish", {"topic": "orders", "payload": {"n": n}})
    items = wait_until(lambda: _letters(tenant, failing["id"], 3))
    assert len(webhook.settle("/shipping")) == 3

    webhook.always("/billing", 200)
    chosen = [items[0]["id"], items[2]["id"]]
    answer = tenant.admin.post(f"/subscriptions/{failing['id']}/dead-letters/redrive",
                               {"ids": chosen})
    assert answer.status_code == 200, answer.json
    assert answer.json == {"redriven": 2}

    webhook.wait_for("/billing", 5)
    billing = webhook.settle("/billing")
    redriven = billing[3:]
    assert sorted(r.json["n"] for r in redriven) == sorted([items[0]["payload"]["n"],
                                                            items[2]["payload"]["n"]])
    assert [r.attempt for r in redriven] == [1, 1]
    assert len(webhook.received("/shipping")) == 3  # the other group saw nothing again
    left = tenant.admin.get(f"/subscriptions/{failing['id']}/dead-letters").json["items"]
    assert [e["id"] for e in left] == [items[1]["id"]]

    purged = tenant.admin.delete(f"/subscriptions/{failing['id']}/dead-letters")
    assert purged.json == {"purged": 1}
    assert tenant.admin.get(f"/subscriptions/{failing['id']}/dead-letters").json["items"] == []


def test_dead_letter_endpoints_check_tenant_and_role(tenant, other_tenant, subscriptions,
                                                      webhook):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/x"))
    path = f"/subscriptions/{sub['id']}/dead-letters"
    assert other_tenant.admin.get(path).json["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"
    assert other_tenant.admin.post(path + "/redrive", {}).status_code == 404
    assert tenant.key("producer").get(path).status_code == 403
    assert tenant.key("consumer").get(path).status_code == 200
    bad = tenant.admin.post(path + "/redrive", {"max_messages": 0})
    assert bad.status_code == 422
    assert tenant.admin.get(path + "?cursor=nope").status_code == 422


def _ok(response):
    return response.json if response.status_code == 200 else None


def _stats(tenant, sub_id, **expected):
    stats = tenant.admin.get(f"/subscriptions/{sub_id}").json["stats"]
    return stats if all(stats[k] == v for k, v in expected.items()) else None


def _letters(tenant, sub_id, count):
    items = tenant.admin.get(f"/subscriptions/{sub_id}/dead-letters").json["items"]
    return items if len(items) >= count else None


def _delivery(tenant, message_id, sub_id, status):
    record = tenant.admin.get(f"/messages/{message_id}").json
    found = [d for d in record["deliveries"] if d["subscription_id"] == sub_id]
    return found[0] if found and found[0]["status"] == status else None
