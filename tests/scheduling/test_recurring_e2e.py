"""Recurring schedules through the real worker and scheduler processes."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.conftest import TenantHandle
from tests.delivery.conftest import (
    Processes,
    Subscriptions,
    Webhook,
    on_each_redis,  # noqa: F401 (`settings`: both Redis kinds)
)

pytestmark = pytest.mark.e2e

EVERY_SECOND = "*/1 * * * * *"


def _run_ms(requests: list, schedule_id: str) -> list[int]:
    """Run times (ms) of the delivered runs of `schedule_id`, from their message ids."""
    ids = [r.headers["x-mq-message-id"] for r in requests]
    assert all(i.startswith(f"{schedule_id}:") for i in ids), ids
    return sorted(int(i.rsplit(":", 1)[1]) for i in ids)


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.single_redis
def test_every_second_fires_once_per_second_with_two_schedulers(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes) -> None:
    topic = tenant.create_queue()["name"]
    subscriptions.create(topic, "g", webhook.url("/cron"))
    processes.worker(threads=4)
    processes.scheduler()
    processes.scheduler()
    created = tenant.admin.post("/publish/scheduled", {"topic": topic, "cron": EVERY_SECOND,
                                                       "payload": {"tick": True}}).json
    schedule_id, first = created["schedule_id"], _ms(created["next_run_at"])
    time.sleep(4.5)
    stopped_ms = time.time() * 1000
    assert tenant.admin.delete(f"/schedules/{schedule_id}").status_code == 204
    got = webhook.settle("/cron", quiet_s=1.5)
    runs = _run_ms(got, schedule_id)
    assert len(runs) == len(set(runs)), f"a run was published twice: {runs}"
    assert runs == list(range(first, runs[-1] + 1, 1000)), runs  # every second, no gap
    # Runs parked ahead of their time were cancelled with the schedule.
    assert stopped_ms - 1500 <= runs[-1] <= stopped_ms + 200
    for request in got:  # never before its time
        assert request.at * 1000 >= int(request.headers["x-mq-message-id"].rsplit(":")[1])
    assert len(runs) >= 4
    message = tenant.admin.get(f"/messages/{schedule_id}:{runs[0]}").json
    assert message["headers"]["X-MQ-Schedule-Id"] == schedule_id
    assert message["status"] == "published"
    schedule_gone = tenant.admin.get(f"/schedules/{schedule_id}")
    assert schedule_gone.status_code == 404


@pytest.mark.single_redis
def test_missed_runs_are_coalesced(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes) -> None:
    topic = tenant.create_queue()["name"]
    subscriptions.create(topic, "g", webhook.url("/missed"))
    processes.worker(threads=2)
    created = tenant.admin.post("/publish/scheduled", {"topic": topic, "cron": EVERY_SECOND,
                                                       "payload": 1}).json
    schedule_id = created["schedule_id"]
    time.sleep(3)  # no scheduler: three runs are missed
    started_ms = time.time() * 1000
    processes.scheduler()
    time.sleep(2)
    assert tenant.admin.delete(f"/schedules/{schedule_id}").status_code == 204
    runs = _run_ms(webhook.settle("/missed", quiet_s=1.5), schedule_id)
    missed = [r for r in runs if r < started_ms - 1000]
    assert missed == [_ms(created["next_run_at"])], runs  # the missed runs fired once
    last = tenant.admin.get("/schedules").json["items"]
    assert schedule_id not in [s["id"] for s in last]
