"""Create, read, list and delete subscriptions, and the consumer groups they own."""

from __future__ import annotations

import json
import uuid

import pytest

from broker.dead_letters import list_entries
from broker.keys import group_name
from tests.subscriptions.helpers import HOOK, RedisView, body, publish, subscribe


@pytest.fixture
def broker(settings):
    return RedisView(settings.redis_namespace)


def test_create_answers_the_contract_defaults(tenant):
    tenant.create_queue("orders")
    response = tenant.admin.post("/subscriptions", {
        "topic": "orders", "consumer_group": "billing", "consumer_name": "billing-1",
        "handler_config": {"type": "http", "url": HOOK}})
    assert response.status_code == 201, response.json
    sub = response.json
    assert sub["id"]
    expected = {
        "topic": "orders", "consumer_group": "billing", "consumer_name": "billing-1",
        "subscription_type": "webhook", "offset_reset_policy": "latest",
        "max_poll_records": 500, "session_timeout_ms": 30000, "heartbeat_interval_ms": 3000,
        "handler_config": {"type": "http", "url": HOOK, "headers": {}, "timeout_ms": 30000,
                           "secret_set": False},
        "message_filter": None, "dead_letter_queue": "orders.deadletter",
        "dead_letter_expired": False, "max_retry_attempts": 3, "retry_delay_ms": 1000,
        "max_retry_delay_ms": 300000, "status": "active", "last_consumed_at": None,
    }
    assert {k: sub[k] for k in expected} == expected
    assert sub["created_at"].endswith("Z") and sub["updated_at"].endswith("Z")


def test_get_returns_the_subscription_with_zero_stats(tenant):
    queue = tenant.create_queue()
    sub = subscribe(tenant, queue["name"])
    response = tenant.admin.get(f"/subscriptions/{sub['id']}")
    assert response.status_code == 200, response.json
    got = response.json
    assert got["stats"] == {"lag": 0, "pending": 0, "delivered_total": 0, "failed_total": 0,
                            "filtered_total": 0, "dead_lettered_total": 0}
    assert {k: v for k, v in got.items() if k != "stats"} == sub


def test_create_makes_the_group_on_every_partition(tenant, broker):
    queue = tenant.create_queue(partition_count=3)
    sub = subscribe(tenant, queue["name"], consumer_group="fanout")
    for partition in range(3):
        group = broker.group(tenant.id, "fanout", queue["id"], partition)
        assert group is not None, partition
        assert group["pending"] == 0
    assert sub["consumer_group"] == "fanout"


def test_latest_starts_at_the_tip_and_earliest_at_the_start(tenant, broker):
    queue = tenant.create_queue()
    publish(tenant, queue["name"], 4)
    latest = subscribe(tenant, queue["name"], consumer_group="new-only")
    earliest = subscribe(tenant, queue["name"], consumer_group="replay",
                         offset_reset_policy="earliest")
    assert tenant.admin.get(f"/subscriptions/{latest['id']}").json["stats"]["lag"] == 0
    assert tenant.admin.get(f"/subscriptions/{earliest['id']}").json["stats"]["lag"] == 4
    assert broker.group(tenant.id, "new-only", queue["id"])["lag"] == 0
    assert broker.group(tenant.id, "replay", queue["id"])["last-delivered-id"] == "0-0"


def test_stats_count_lag_and_pending_after_publishing(tenant, broker, settings):
    queue = tenant.create_queue(partition_count=2)
    sub = subscribe(tenant, queue["name"], consumer_group="stats")
    publish(tenant, queue["name"], 3, partition=0)
    publish(tenant, queue["name"], 2, partition=1)
    stream = broker.keys.stream(queue["id"], 0)
    broker.redis.xreadgroup(f"{tenant.id}:stats", "c1", {stream: ">"}, count=2)
    broker.redis.hset(broker.keys.subscription_counters(sub["id"]),
                      mapping={"delivered": 7, "failed": 2, "filtered": 1, "dead_lettered": 1})
    stats = tenant.admin.get(f"/subscriptions/{sub['id']}").json["stats"]
    assert stats == {"lag": 3, "pending": 2, "delivered_total": 7, "failed_total": 2,
                     "filtered_total": 1, "dead_lettered_total": 1}


def test_list_filters_by_topic_and_status_and_paginates(tenant):
    first, second = tenant.create_queue(), tenant.create_queue()
    made = [subscribe(tenant, first["name"]) for _ in range(3)]
    other = subscribe(tenant, second["name"])
    tenant.admin.post(f"/subscriptions/{made[1]['id']}/pause")

    everything = tenant.admin.get("/subscriptions").json
    assert [s["id"] for s in everything["items"]] == [s["id"] for s in [*made, other]]
    assert everything["next_cursor"] is None

    by_topic = tenant.admin.get(f"/subscriptions?topic={first['name']}").json["items"]
    assert [s["id"] for s in by_topic] == [s["id"] for s in made]
    paused = tenant.admin.get("/subscriptions?status=paused").json["items"]
    assert [s["id"] for s in paused] == [made[1]["id"]]

    page = tenant.admin.get("/subscriptions?limit=2").json
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = tenant.admin.get(f"/subscriptions?limit=2&cursor={page['next_cursor']}").json
    assert [s["id"] for s in page["items"] + rest["items"]] == \
        [s["id"] for s in [*made, other]]
    assert rest["next_cursor"] is None


def test_list_of_an_unknown_topic_is_empty(tenant):
    subscribe(tenant, tenant.create_queue()["name"])
    response = tenant.admin.get("/subscriptions?topic=nothing-here")
    assert response.status_code == 200
    assert response.json == {"items": [], "next_cursor": None}


def test_list_rejects_bad_arguments(tenant):
    assert tenant.admin.get("/subscriptions?limit=0").status_code == 422
    assert tenant.admin.get("/subscriptions?status=gone").status_code == 422
    assert tenant.admin.get("/subscriptions?cursor=garbage").status_code == 422


def test_duplicate_member_is_a_conflict(tenant):
    queue = tenant.create_queue()
    fields = {"consumer_group": "billing", "consumer_name": "one"}
    subscribe(tenant, queue["name"], **fields)
    again = tenant.admin.post("/subscriptions", body(queue["name"], **fields))
    assert again.status_code == 409
    assert again.json["error"]["code"] == "SUBSCRIPTION_ALREADY_EXISTS"
    # The same group with another member name is a second competing consumer.
    subscribe(tenant, queue["name"], consumer_group="billing", consumer_name="two")


def test_unknown_topic_is_not_found(tenant):
    response = tenant.admin.post("/subscriptions", body("missing"))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "TOPIC_NOT_FOUND"


def test_delete_removes_the_group_only_with_its_last_member(tenant, broker):
    queue = tenant.create_queue(partition_count=2)
    one = subscribe(tenant, queue["name"], consumer_group="shared", consumer_name="a")
    two = subscribe(tenant, queue["name"], consumer_group="shared", consumer_name="b")
    assert tenant.admin.delete(f"/subscriptions/{one['id']}").status_code == 204
    assert broker.group(tenant.id, "shared", queue["id"], 1) is not None
    assert tenant.admin.get(f"/subscriptions/{one['id']}").status_code == 404
    assert tenant.admin.delete(f"/subscriptions/{two['id']}").status_code == 204
    assert broker.group(tenant.id, "shared", queue["id"], 0) is None
    assert broker.group(tenant.id, "shared", queue["id"], 1) is None


def test_delete_removes_counters_and_dead_letters(tenant, broker):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    counters = broker.keys.subscription_counters(sub["id"])
    dead = broker.keys.dead_letters(sub["id"])
    broker.redis.hset(counters, "delivered", 3)
    broker.redis.xadd(dead, {"x": "1"})
    assert tenant.admin.delete(f"/subscriptions/{sub['id']}").status_code == 204
    assert not broker.redis.exists(counters) and not broker.redis.exists(dead)
    again = tenant.admin.delete(f"/subscriptions/{sub['id']}")
    assert again.status_code == 404
    assert again.json["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"


def test_lag_stays_exact_on_streams_with_history(tenant, broker):
    queue = tenant.create_queue()
    publish(tenant, queue["name"], 4)
    latest = subscribe(tenant, queue["name"], consumer_group="tip")
    publish(tenant, queue["name"], 2)
    assert broker.group(tenant.id, "tip", queue["id"])["lag"] == 2
    assert tenant.admin.get(f"/subscriptions/{latest['id']}").json["stats"]["lag"] == 2

    tenant.admin.post(f"/queues/{queue['name']}/purge")
    publish(tenant, queue["name"], 3)
    earliest = subscribe(tenant, queue["name"], consumer_group="start",
                         offset_reset_policy="earliest")
    assert tenant.admin.get(f"/subscriptions/{earliest['id']}").json["stats"]["lag"] == 3


def test_a_second_member_leaves_the_group_where_it_is(tenant, broker):
    queue = tenant.create_queue()
    publish(tenant, queue["name"], 3)
    subscribe(tenant, queue["name"], consumer_group="shared", consumer_name="a",
              offset_reset_policy="earliest")
    subscribe(tenant, queue["name"], consumer_group="shared", consumer_name="b")
    group = broker.group(tenant.id, "shared", queue["id"])
    assert group["last-delivered-id"] == "0-0" and group["lag"] == 3


def test_dead_letters_page_newest_first_without_skips_or_repeats(broker):
    subscription_id = f"dl-{uuid.uuid4().hex[:8]}"
    key = broker.keys.dead_letters(subscription_id)
    for n in range(5):
        broker.redis.xadd(key, {"e": json.dumps({"n": n})})

    def page(after: str | None) -> tuple[list[int], str | None]:
        items, cursor = list_entries(broker.redis, broker.keys, subscription_id, limit=2,
                                     after=after)
        return [item["n"] for item in items], cursor

    first, cursor = page(None)
    assert first == [4, 3]
    broker.redis.xadd(key, {"e": json.dumps({"n": 9})})  # dead-lettered while paging
    second, cursor = page(cursor)
    third, cursor = page(cursor)
    assert (second, third, cursor) == ([2, 1], [0], None)
    broker.redis.delete(key)


def test_a_drained_group_has_no_lag_whatever_its_counters_say(tenant, broker):
    """After a restart from the AOF Redis may hold a group's read counter invalid or stale
    (reproduced here with SETID ... ENTRIESREAD); a group that has read everything has no lag
    in the subscription's stats nor in the consumer metrics."""
    queue = tenant.create_queue()
    sub = subscribe(tenant, queue["name"], consumer_group="drained",
                    offset_reset_policy="earliest")
    publish(tenant, queue["name"], 4)
    key = broker.keys.stream(queue["id"], 0)
    group = group_name(tenant.id, "drained")
    read = broker.redis.xreadgroup(group, "c1", {key: ">"}, count=10)
    broker.redis.xack(key, group, *[entry_id for entry_id, _ in read[0][1]])
    broker.redis.execute_command("XGROUP", "SETID", key, group, "$", "ENTRIESREAD", 1)
    assert broker.group(tenant.id, "drained", queue["id"])["lag"] == 3  # stale counters

    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["stats"]["lag"] == 0
    consumers = tenant.admin.get("/metrics/consumers").json["items"]
    assert next(c for c in consumers if c["id"] == sub["id"])["lag"] == 0
    publish(tenant, queue["name"], 2)  # unread entries show again (by Redis's count)
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["stats"]["lag"] > 0
