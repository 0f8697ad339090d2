"""One subscription, end to end: publish through the API, a worker delivers to a webhook."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tests.delivery.conftest import publish_many
from tests.processes import wait_until


@pytest.fixture
def processes(shared_processes):
    """The module's tests share their worker and scheduler (`SharedProcesses`): none kills,
    stops or reconfigures them."""
    return shared_processes


def test_delivers_each_message_once_with_headers_and_signature(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/orders"),
                               handler={"secret": "s3cret", "headers": {"X-Team": "billing"}})
    processes.worker()
    published = tenant.admin.post("/publish", {
        "topic": "orders", "payload": {"total": 42}, "key": "cust-1",
        "correlation_id": "corr-9", "trace_id": "trace-7"})
    assert published.status_code == 201, published.json
    ids = [published.json["message_id"], *publish_many(tenant, "orders", 20)]

    got = webhook.wait_for("/orders", 21)
    assert sorted(r.headers["x-mq-message-id"] for r in webhook.settle("/orders")) == sorted(ids)
    first = next(r for r in got if r.headers["x-mq-message-id"] == ids[0])
    assert first.json == {"total": 42}
    assert first.headers["x-mq-topic"] == "orders"
    assert first.headers["x-mq-attempt"] == "1"
    assert first.headers["x-mq-key"] == "cust-1"
    assert first.headers["x-mq-correlation-id"] == "corr-9"
    assert first.headers["x-mq-trace-id"] == "trace-7"
    assert first.headers["x-team"] == "billing"
    expected = hmac.new(b"s3cret", first.headers["x-mq-timestamp"].encode() + b"." + first.body,
                        hashlib.sha256).hexdigest()
    assert first.headers["x-mq-signature"] == f"sha256={expected}"

    # Records are written in batches off the hot path: they appear shortly after.
    message = wait_until(lambda: _delivered(tenant, ids[0], sub["id"]))
    assert message["attempts"] == 1
    stats = wait_until(lambda: _stats_when(tenant, sub["id"], "delivered_total", 21))
    assert stats["failed_total"] == 0
    deliveries = tenant.admin.get(f"/subscriptions/{sub['id']}/deliveries?limit=100").json
    assert len(deliveries["items"]) == 21
    assert {d["status"] for d in deliveries["items"]} == {"success"}


def test_envelope_body(tenant, subscriptions, webhook, processes):
    tenant.create_queue("events")
    subscriptions.create("events", "audit", webhook.url("/audit"), handler={"envelope": True})
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "events", "payload": [1, 2],
                                               "headers": {"type": "x"}}).json
    body = webhook.wait_for("/audit", 1)[0].json
    assert body["message_id"] == published["message_id"]
    assert body["offset"] == published["offset"]
    assert body["payload"] == [1, 2]
    assert body["headers"] == {"type": "x"}
    assert body["attempt"] == 1
    assert body["topic"] == "events"


def _delivered(tenant, message_id, sub_id):
    record = tenant.admin.get(f"/messages/{message_id}").json
    found = [d for d in record["deliveries"] if d["subscription_id"] == sub_id]
    return found[0] if found and found[0]["status"] == "delivered" else None


def _stats_when(tenant, sub_id, field, value):
    stats = tenant.admin.get(f"/subscriptions/{sub_id}").json["stats"]
    return stats if stats[field] == value else None
