"""The API SIGKILLed (master and workers) in the middle of batch publishes: a client that
retries every batch it got no answer for, with the same message ids, ends with every message
delivered exactly once — idempotency turns its retries of batches the API had stored into
duplicates answered, not published twice."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import Fleet, figure

pytestmark = pytest.mark.e2e


def test_an_api_killed_mid_batch_loses_nothing_and_retries_publish_nothing_twice(
        own_api_fleet: Fleet) -> None:
    fleet = own_api_fleet
    topic = fleet.topic(partitions=2)
    fleet.subscribe(topic, "/a")
    fleet.processes.worker(threads=4)
    fleet.processes.scheduler()
    publisher = fleet.publish_steadily(topic, batch=20, every_s=0.05, for_s=60)

    kills = []
    for _ in range(2):
        time.sleep(2.0)
        fleet.publishing.wait(5)  # a batch on its way: the kill cuts it off
        fleet.kill_api()
        kills.append(time.time())
        fleet.start_api()
    time.sleep(1.0)
    acknowledged = publisher.stop()

    # A batch cut off between its commit and its append reaches the stream through the
    # outbox sweep, which takes records 5 s old (`scheduler.housekeeping.OUTBOX_AGE`).
    counts = fleet.wait_for_all("/a", acknowledged, timeout=60)
    assert fleet.failed_publishes >= 2, "no publish was cut off: the test proved nothing"
    assert max(counts.values()) == 1, "a retried batch was published twice"
    figure("API SIGKILL mid-batch x2 (client retries, same ids)", published=len(acknowledged),
           lost=0, duplicates=0, failed_publishes_retried=fleet.failed_publishes,
           publishing_again_after_kill_s=max(fleet.first_ack_after(k) for k in kills),
           retried_batches_delivered_after_ack_s=retried_delivery_s(fleet, "/a"))


def retried_delivery_s(fleet: Fleet, path: str) -> float:
    """The longest wait, from its acknowledgement, for a batch that needed a retry to arrive:
    a batch cut off between its commit and its append waits for the outbox sweep."""
    first = fleet.first_arrivals(path)
    return max((max(first[i] for i in ids) - acked for acked, ids in fleet.retried),
               default=0.0)
