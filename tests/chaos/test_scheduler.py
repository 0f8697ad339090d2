"""Schedulers SIGKILLed while delayed messages come due: a standby takes the leadership in
seconds, a restarted lone scheduler releases what came due while it was down at once, and
ten restarts under a release burst deadlock nothing."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.chaos.conftest import Fleet, figure, seconds_until

pytestmark = pytest.mark.e2e


def publish_delayed(fleet: Fleet, topic: dict[str, Any], delays_ms: list[int]
                    ) -> dict[str, float]:
    """Publish one delayed message per delay; returns message id -> due time (epoch s)."""
    due = {}
    for delay_ms in delays_ms:
        answer = fleet.call("POST", "/publish/delayed", {"topic": topic["name"],
                                                         "delay_ms": delay_ms, "payload": {}})
        assert answer.status_code == 202, answer.text
        body = answer.json()
        due[body["message_id"]] = datetime.fromisoformat(body["deliver_at"]).timestamp()
    return due


def lateness(fleet: Fleet, path: str, due: dict[str, float]) -> float:
    """The latest first arrival of a delayed message after its due time, in seconds."""
    first = fleet.first_arrivals(path)
    return max(first[message_id] - at for message_id, at in due.items())


def leader_pid(fleet: Fleet) -> int | None:
    leaders = [beat["pid"] for beat in fleet.processes.beats("scheduler") if beat.get("leader")]
    return int(leaders[0]) if len(leaders) == 1 else None


def test_a_standby_takes_over_within_seconds_and_due_messages_keep_flowing(
        fleet: Fleet) -> None:
    topic = fleet.topic()
    fleet.subscribe(topic, "/d")
    fleet.processes.worker(threads=4)
    leader = fleet.processes.scheduler()
    seconds_until(lambda: leader_pid(fleet) == leader.pid, timeout=10)
    standby = fleet.processes.scheduler()
    due = publish_delayed(fleet, topic, [1000 + 100 * i for i in range(40)])

    fleet.processes.kill(leader)
    took_over_s = seconds_until(lambda: leader_pid(fleet) == standby.pid, timeout=15)
    counts = fleet.wait_for_all("/d", list(due))
    figure("scheduler SIGKILL with a standby", leadership_taken_over_s=took_over_s,
           delayed=len(due), lost=0, duplicates=sum(counts.values()) - len(due),
           latest_release_after_due_s=lateness(fleet, "/d", due))


def test_a_restarted_lone_scheduler_releases_what_came_due_while_it_was_down(
        fleet: Fleet) -> None:
    topic = fleet.topic()
    fleet.subscribe(topic, "/d")
    fleet.processes.worker(threads=4)
    # Killed before the messages are parked, so that none can be released before the kill
    # however slowly they are published; its leadership lease outlives it.
    fleet.processes.kill(fleet.processes.scheduler())
    due = publish_delayed(fleet, topic, [500 + 50 * i for i in range(50)])
    time.sleep(3.5)  # everything comes due while no scheduler runs
    assert not fleet.sink.received("/d")

    restarted_at = time.time()
    fleet.processes.scheduler()
    counts = fleet.wait_for_all("/d", list(due))
    figure("lone scheduler SIGKILL, restarted after 3.5 s",
           all_delivered_after_restart_s=max(fleet.first_arrivals("/d").values()) - restarted_at,
           delayed=len(due), lost=0, duplicates=sum(counts.values()) - len(due))
    assert fleet.stream_order(topic) == sorted(due, key=due.__getitem__)  # in due order


def test_ten_scheduler_restarts_under_a_release_burst_deadlock_nothing(
        fleet: Fleet, own_postgres: Any) -> None:
    topic = fleet.topic()
    fleet.subscribe(topic, "/d")
    fleet.processes.worker(threads=8)
    schedulers = [fleet.processes.scheduler(), fleet.processes.scheduler()]
    due = publish_delayed(fleet, topic, [300 + 15 * i for i in range(300)])

    for restart in range(10):
        fleet.processes.kill(schedulers[restart % 2])
        schedulers[restart % 2] = fleet.processes.scheduler()
    counts = fleet.wait_for_all("/d", list(due))
    deadlocks = own_postgres.log().count("deadlock detected")
    figure("10 scheduler SIGKILL+restarts under a burst of 300", deadlocks=deadlocks,
           lost=0, duplicates=sum(counts.values()) - len(due))
    assert deadlocks == 0
