"""Fan-out and competing consumers across a fleet of forked worker processes; heartbeats in
`GET /status`; expiry; the webhook URL check at delivery time."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from models import ConsumptionRecord, Database
from tests.delivery.conftest import publish_many
from tests.processes import wait_until

MESSAGES = 300


@pytest.mark.single_redis
def test_fan_out_to_three_groups_and_load_sharing_inside_one(
        tenant, subscriptions, webhook, processes, settings, client):
    tenant.create_queue("orders", partition_count=2)
    for group in ("a", "b", "c"):
        subscriptions.create("orders", group, webhook.url(f"/{group}"))
    shared = [subscriptions.create("orders", "pool", webhook.url(f"/pool/{n}"),
                                   consumer_name=f"pool-{n}") for n in range(3)]
    parent = processes.worker(threads=4, wait=False, extra=("--processes", "2"))
    live = wait_until(lambda: _workers(client, parent.pid, 2), timeout=30)
    assert all(w["subscriptions"] >= 6 for w in live), live

    ids = publish_many(tenant, "orders", MESSAGES)
    for group in ("a", "b", "c"):
        got = webhook.wait_for(f"/{group}", MESSAGES)
        assert Counter(r.headers["x-mq-message-id"] for r in got) == Counter(ids), group
    wait_until(lambda: sum(len(webhook.received(f"/pool/{n}")) for n in range(3)) >= MESSAGES)
    time.sleep(1.0)
    per_member = [webhook.received(f"/pool/{n}") for n in range(3)]
    shared_ids = Counter(r.headers["x-mq-message-id"] for got in per_member for r in got)
    assert shared_ids == Counter(ids), "each message to exactly one member of the group"
    assert all(got for got in per_member), [len(got) for got in per_member]
    print(f"\nshared group: {[len(got) for got in per_member]} of {MESSAGES}")

    database = Database(settings.database_url, pool_size=1)
    with database.session() as session:
        instances = set(session.scalars(select(ConsumptionRecord.consumer_instance).where(
            ConsumptionRecord.subscription_id.in_([s["id"] for s in shared]))))
    database.dispose()
    assert len(instances) == 2, "both worker processes delivered"


@pytest.mark.single_redis
def test_expired_messages_are_not_delivered(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/e"))
    stale = tenant.admin.post("/publish", {"topic": "orders", "payload": "stale",
                                           "ttl_ms": 100}).json
    fresh = tenant.admin.post("/publish", {"topic": "orders", "payload": "fresh"}).json
    time.sleep(0.3)
    processes.worker()
    got = webhook.wait_for("/e", 1)
    time.sleep(1.0)
    assert [r.headers["x-mq-message-id"] for r in webhook.received("/e")] == [
        fresh["message_id"]]
    assert got[0].json == "fresh"
    expired = wait_until(lambda: _status_when(tenant, stale["message_id"], "expired"))
    assert expired["status"] == "expired"
    assert [d["subscription_id"] for d in expired["deliveries"]] == [sub["id"]]
    assert tenant.admin.get(f"/messages/{fresh['message_id']}").json["status"] == "published"


def _status_when(tenant, message_id: str, delivery_status: str) -> dict | None:
    """The message once its delivery to every subscription has `delivery_status`."""
    message = tenant.admin.get(f"/messages/{message_id}").json
    deliveries = message["deliveries"]
    done = deliveries and all(d["status"] == delivery_status for d in deliveries)
    return message if done else None


@pytest.mark.single_redis
def test_private_webhook_address_refused_at_delivery(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/private"))
    processes.env["MQ_WEBHOOK_ALLOW_PRIVATE"] = "false"
    processes.worker()
    tenant.admin.post("/publish", {"topic": "orders", "payload": 1})
    letters = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    assert letters[0]["failure_reason"] == "permanent"
    assert "refused" in letters[0]["error_message"]
    assert webhook.received("/private") == []


def _workers(client, parent_pid, count):
    """The heartbeats of the forked children of `parent_pid`, once there are `count`."""
    workers = client.get("/api/v1/mq/status").json["processes"]["workers"]
    mine = [w for w in workers if _parent(w["pid"]) == parent_pid]
    return mine if len(mine) >= count else None


def _parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
