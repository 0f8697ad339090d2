"""Workers SIGKILLed again and again while messages flow: nothing acknowledged is lost, the
killed worker's in-flight messages come back within seconds, duplicates stay within what it
held (its prefetch)."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pytest

from broker.envelope import FIELD
from broker.keys import Keys, group_name
from tests.chaos.conftest import Fleet, figure

pytestmark = pytest.mark.e2e

KILLS = 3
THREADS = 4
#: The default prefetch: 8 unacknowledged entries per delivery thread.
PREFETCH = 8 * THREADS


def held_by(fleet: Fleet, topic: dict[str, Any], sub: dict[str, Any], instance: str
            ) -> set[str]:
    """The message ids pending for `instance`'s consumer on every partition of `topic`."""
    keys, redis = Keys(fleet.settings.redis_namespace), fleet.processes.redis
    group, consumer = group_name(fleet.tenant_id, sub["consumer_group"]), \
        f"{sub['consumer_name']}@{instance}"
    held = set()
    for partition in range(topic["partition_count"]):
        stream = keys.stream(topic["id"], partition)
        rows = redis.xpending_range(stream, group, "-", "+", 1000, consumername=consumer)
        for row in rows:
            for _, fields in redis.xrange(stream, row["message_id"], row["message_id"]):
                held.add(json.loads(fields[FIELD])["id"])
    return held


def holding(fleet: Fleet, topic: dict[str, Any], sub: dict[str, Any], proc: Any,
            timeout: float = 10.0) -> set[str]:
    """The message ids `proc` holds, once it holds some. Which of two consumers reads a new
    entry first is a race, and the older worker may win it for a while: a kill proves
    something only while the victim holds entries."""
    instance = instance_of(fleet, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = held_by(fleet, topic, sub, instance)
        if held:
            return held
        time.sleep(0.01)
    raise AssertionError(f"the victim held nothing for {timeout:.0f} s: is it consuming?")


def instance_of(fleet: Fleet, proc: Any) -> str:
    [beat] = [b for b in fleet.processes.beats("worker") if b["pid"] == proc.pid]
    return str(beat["instance"])


def test_a_worker_killed_three_times_loses_nothing_and_its_messages_return_in_seconds(
        fleet: Fleet) -> None:
    topic = fleet.topic(partitions=2)
    sub = fleet.subscribe(topic, "/w")  # default session timeout: 30 s
    fleet.sink.delay_s["/w"] = 0.05
    fleet.processes.worker(threads=THREADS)
    victim = fleet.processes.worker(threads=THREADS)
    publisher = fleet.publish_steadily(topic, batch=10, every_s=0.15, for_s=60)

    kills: list[tuple[float, set[str]]] = []
    for _ in range(KILLS):
        time.sleep(1.0)
        held = holding(fleet, topic, sub, victim)
        fleet.processes.kill(victim)
        kills.append((time.time(), held))
        victim = fleet.processes.worker(threads=THREADS)
    acknowledged = publisher.stop()

    counts = fleet.wait_for_all("/w", acknowledged)
    returned = [after for killed_at, held in kills for message_id in held
                if (after := fleet.first_arrival_after("/w", killed_at, message_id)) is not None]
    duplicates = sum(n - 1 for n in counts.values())
    figure("worker SIGKILL x3", published=len(acknowledged), lost=0, duplicates=duplicates,
           in_flight=sum(len(held) for _, held in kills),
           redelivered_p50_s=statistics.median(returned) if returned else 0.0,
           redelivered_max_s=max(returned, default=0.0))
    assert returned, "nothing the victim held came back"
    assert duplicates <= KILLS * PREFETCH

