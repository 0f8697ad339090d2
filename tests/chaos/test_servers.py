"""The servers under the service fail while messages flow: Redis SIGKILLed and restarted on
its append-only file, PostgreSQL stopped and started. A client that retries what was not
acknowledged (same message ids) loses nothing; deliveries resume once the server is back;
a drained subscription's lag reads 0 after the Redis restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chaos.conftest import DurableRedis, Fleet, OwnPostgres, figure, seconds_until

pytestmark = pytest.mark.e2e


def lag(fleet: Fleet, sub: dict[str, Any]) -> int | None:
    answer = fleet.call("GET", f"/subscriptions/{sub['id']}")
    return int(answer.json()["stats"]["lag"]) if answer.status_code == 200 else None


def test_redis_killed_and_restarted_on_its_aof_loses_nothing_acknowledged(
        fleet: Fleet, own_redis: DurableRedis) -> None:
    topic = fleet.topic(partitions=2)
    sub = fleet.subscribe(topic, "/r")
    fleet.processes.worker(threads=4)
    fleet.processes.scheduler()
    publisher = fleet.publish_steadily(topic, batch=10, every_s=0.1, for_s=60)
    time.sleep(2.0)
    own_redis.kill()
    time.sleep(1.5)
    own_redis.start()
    restarted_at = time.time()
    time.sleep(2.0)
    acknowledged = publisher.stop()

    counts = fleet.wait_for_all("/r", acknowledged, timeout=60)
    lag_zero_s = seconds_until(lambda: lag(fleet, sub) == 0, timeout=15)
    figure("Redis SIGKILL, restarted on its AOF after 1.5 s", published=len(acknowledged),
           lost=0, duplicates=sum(counts.values()) - len(acknowledged),
           deliveries_resumed_after_restart_s=fleet.first_arrival_after("/r", restarted_at),
           publishes_resumed_after_restart_s=fleet.first_ack_after(restarted_at),
           lag_zero_after_drain_s=lag_zero_s)


def test_postgres_stopped_and_started_loses_nothing_acknowledged(
        fleet: Fleet, own_postgres: OwnPostgres) -> None:
    topic = fleet.topic(partitions=2)
    fleet.subscribe(topic, "/p")
    fleet.processes.worker(threads=4)
    fleet.processes.scheduler()
    publisher = fleet.publish_steadily(topic, batch=10, every_s=0.1, for_s=60)
    time.sleep(2.0)
    own_postgres.stop()
    time.sleep(4.0)
    own_postgres.start()
    started_at = time.time()
    time.sleep(2.0)
    acknowledged = publisher.stop()

    counts = fleet.wait_for_all("/p", acknowledged, timeout=60)
    figure("PostgreSQL stopped for 4 s", published=len(acknowledged), lost=0,
           duplicates=sum(counts.values()) - len(acknowledged),
           publishes_resumed_after_restart_s=fleet.first_ack_after(started_at),
           deliveries_after_restart_s=fleet.first_arrival_after("/p", started_at))
