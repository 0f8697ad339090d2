"""Delayed and scheduled messages through the real worker and scheduler processes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from mq.settings import Settings
from tests.conftest import TenantHandle
from tests.delivery.conftest import (
    Processes,
    Subscriptions,
    Webhook,
    on_each_redis,  # noqa: F401 (`settings`: both Redis kinds)
)
from tests.processes import wait_until

pytestmark = pytest.mark.e2e


def _setup(tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
           path: str) -> str:
    topic = tenant.create_queue()["name"]
    subscriptions.create(topic, "g", webhook.url(path))
    return topic


def _due(body: dict[str, str]) -> float:
    return datetime.fromisoformat(body["deliver_at"].replace("Z", "+00:00")).timestamp()


def test_delayed_and_scheduled_arrive_when_due(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes) -> None:
    topic = _setup(tenant, subscriptions, webhook, "/due")
    processes.worker(threads=4)
    processes.scheduler()
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    answers = [tenant.admin.post("/publish/delayed", {"topic": topic, "delay_ms": ms,
                                                      "payload": {"n": i}}).json
               for i, ms in enumerate((300, 800, 1200))]
    answers.append(tenant.admin.post("/publish/scheduled", {
        "topic": topic, "deliver_at": at.isoformat(), "payload": {"n": 3}}).json)
    assert tenant.admin.get(f"/messages/{answers[0]['message_id']}").json["status"] == \
        "scheduled"
    got = webhook.wait_for("/due", 4, timeout=20)
    due = {a["message_id"]: _due(a) for a in answers}
    for request in got:
        message_id = request.headers["x-mq-message-id"]
        assert request.at >= due[message_id] - 0.002, (message_id, request.at, due[message_id])
    for answer in answers:
        record = wait_until(lambda a=answer: (r := tenant.admin.get(
            f"/messages/{a['message_id']}").json)["status"] == "published" and r)
        assert record["offset"]
    time.sleep(0.5)
    assert len(webhook.received("/due")) == 4


def test_cancelled_message_is_not_delivered(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes) -> None:
    topic = _setup(tenant, subscriptions, webhook, "/cancel")
    processes.worker(threads=2)
    processes.scheduler()
    kept = tenant.admin.post("/publish/delayed",
                             {"topic": topic, "delay_ms": 1000, "payload": "kept"}).json
    dropped = tenant.admin.post("/publish/delayed",
                                {"topic": topic, "delay_ms": 800, "payload": "dropped"}).json
    assert tenant.admin.delete(f"/messages/{dropped['message_id']}").status_code == 204
    [request] = webhook.wait_for("/cancel", 1)
    assert request.json == "kept"
    wait_until(lambda: tenant.admin.get(f"/messages/{kept['message_id']}").json["status"]
               == "published")
    late = tenant.admin.delete(f"/messages/{kept['message_id']}")
    assert late.status_code == 409 and late.json["error"]["code"] == "CONFLICT"
    time.sleep(0.5)
    assert len(webhook.received("/cancel")) == 1
    assert tenant.admin.get(f"/messages/{dropped['message_id']}").json["status"] == "cancelled"


def test_two_schedulers_release_each_message_once(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes) -> None:
    topic = _setup(tenant, subscriptions, webhook, "/twice")
    processes.worker(threads=8)
    processes.scheduler()
    processes.scheduler()
    count = 200
    for i in range(count):
        response = tenant.admin.post("/publish/delayed", {"topic": topic, "payload": i,
                                                          "delay_ms": 200 + (i * 7) % 1500})
        assert response.status_code == 202
    webhook.wait_for("/twice", count, timeout=30)
    got = webhook.settle("/twice", quiet_s=1.0)
    assert sorted(r.json for r in got) == list(range(count))


@pytest.mark.single_redis
def test_lost_delay_set_is_rebuilt_from_the_database(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes, settings: Settings) -> None:
    topic = _setup(tenant, subscriptions, webhook, "/rebuilt")
    processes.worker(threads=4)
    scheduler = processes.scheduler()
    for i in range(20):
        tenant.admin.post("/publish/delayed", {"topic": topic, "payload": i,
                                               "delay_ms": 2500 + i * 20})
    processes.kill(scheduler)
    redis, keys = processes.redis, processes.keys
    assert redis.zcard(keys.delayed()) >= 20
    # Redis lost its data: the delay set and, with it, the killed scheduler's rebuild lease.
    redis.delete(keys.delayed(), keys.delayed_payloads(), keys.lock("delay-rebuild"))
    processes.scheduler()
    webhook.wait_for("/rebuilt", 20, timeout=30)
    got = webhook.settle("/rebuilt", quiet_s=1.0)
    assert sorted(r.json for r in got) == list(range(20))
