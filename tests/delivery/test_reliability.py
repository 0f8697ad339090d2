"""Reliability: killed workers, long handlers, poison messages, clean shutdown."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from broker.keys import group_name
from tests.delivery.conftest import publish_many
from tests.processes import wait_until


@pytest.mark.single_redis
def test_sigkill_with_1000_messages_in_flight_loses_nothing(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    subscriptions.create("orders", "billing", webhook.url("/k"), session_timeout_ms=1500)
    webhook.delay_s["/k"] = 0.005
    victim = processes.worker(threads=8)
    ids = publish_many(tenant, "orders", 1000)
    webhook.wait_for("/k", 150)
    processes.kill(victim)
    before_restart = len(webhook.received("/k"))
    processes.worker(threads=8)

    webhook.wait_for("/k", 1000, timeout=60)
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/k", quiet_s=2.0))
    assert set(counts) == set(ids), f"lost: {len(set(ids) - set(counts))}"
    duplicates = sum(n - 1 for n in counts.values())
    print(f"\nSIGKILL after {before_restart} deliveries: 1000 delivered, "
          f"{duplicates} duplicates (deliveries the killed worker made but never acked)")
    assert duplicates <= 100


@pytest.mark.single_redis
def test_long_handler_keeps_its_lease_and_is_not_delivered_twice(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    subscriptions.create("orders", "slow", webhook.url("/slow"), session_timeout_ms=1000,
                         handler={"timeout_ms": 10_000})
    webhook.delay_s["/slow"] = 3.5
    processes.worker(threads=2)
    processes.worker(threads=2)
    ids = publish_many(tenant, "orders", 2)
    webhook.wait_for("/slow", 2, timeout=20)
    got = webhook.settle("/slow", quiet_s=3.0)
    assert sorted(r.headers["x-mq-message-id"] for r in got) == sorted(ids)


@pytest.mark.single_redis
def test_message_that_keeps_killing_its_worker_is_dead_lettered(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "poison", webhook.url("/poison"),
                               session_timeout_ms=1000, max_retry_attempts=10)
    # The webhook kills every running worker: a new worker can deliver the message before
    # `processes.worker` would return it, so "the current worker" is not known then; and
    # it may die before its first heartbeat is seen, so no worker is waited for.
    webhook.on_request["/poison"] = lambda _request: processes.kill_all()
    processes.worker(threads=2, wait=False)
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"boom": True}})

    deadline = time.monotonic() + 90
    letters: list = []
    while not letters and time.monotonic() < deadline:
        if not processes.running():
            processes.worker(threads=2, wait=False)
        letters = tenant.admin.get(f"/subscriptions/{sub['id']}/dead-letters").json["items"]
        time.sleep(0.1)
    assert letters, "never dead-lettered"
    assert letters[0]["failure_reason"] == "max_deliveries"
    assert len(webhook.received("/poison")) == 5


@pytest.mark.single_redis
def test_clean_shutdown_hands_unstarted_messages_back_at_once(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    # A long session timeout: only the hand-back can explain a quick pick-up by the next worker.
    subscriptions.create("orders", "graceful", webhook.url("/g"), session_timeout_ms=60_000)
    webhook.delay_s["/g"] = 0.2
    first = processes.worker(threads=2)
    ids = publish_many(tenant, "orders", 40)
    webhook.wait_for("/g", 4)
    assert processes.stop(first) == 0
    stopped_at = time.monotonic()
    processes.worker(threads=4)
    webhook.wait_for("/g", 40, timeout=30)
    assert time.monotonic() - stopped_at < 20
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/g"))
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, "a clean stop finishes what it started: no duplicates"


@pytest.mark.single_redis
def test_orphaned_entries_all_come_back_without_waiting_for_more_timeouts(
        tenant, subscriptions, webhook, processes):
    """300 entries a dead consumer held: the first reclaim pass takes what the worker has
    room for, and the rest follow pass after pass, not one batch each half session timeout
    (30 s here)."""
    queue = tenant.create_queue("orders")
    sub = subscriptions.create("orders", "orphans", webhook.url("/o"), session_timeout_ms=60_000)
    ids = publish_many(tenant, "orders", 300)
    redis, keys = processes.redis, processes.keys
    key, group = keys.stream(queue["id"], 0), group_name(tenant.id, "orphans")
    held = [entry_id for entry_id, _ in redis.xreadgroup(group, "ghost@gone", {key: ">"},
                                                         count=300)[0][1]]
    assert len(held) == 300
    redis.xclaim(key, group, "ghost@gone", 0, held, idle=120_000, justid=True)  # long idle
    processes.worker(threads=4)
    webhook.wait_for("/o", 300, timeout=20)
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/o", quiet_s=1.0))
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert sub["session_timeout_ms"] == 60_000


def _instance(processes, proc) -> str:
    [beat] = [b for b in processes.beats("worker") if b["pid"] == proc.pid]
    return beat["instance"]


def _pending_by_consumer(processes, key: str, group: str) -> dict[str, int]:
    summary = processes.redis.xpending(key, group)
    return {row["name"]: int(row["pending"]) for row in summary["consumers"]}


def test_a_killed_workers_messages_go_to_a_survivor_at_once(
        tenant, subscriptions, webhook, processes):
    """With a 60 s session timeout, only the heartbeat take-over explains a redelivery within
    seconds of the kill (a reclaim pass would wait for entries idle 60 s)."""
    queue = tenant.create_queue("orders")
    sub = subscriptions.create("orders", "takeover", webhook.url("/t"),
                               session_timeout_ms=60_000)
    webhook.delay_s["/t"] = 0.3
    processes.worker(threads=2)
    victim = processes.worker(threads=2)
    victim_consumer = f"{sub['consumer_name']}@{_instance(processes, victim)}"
    key, group = processes.keys.stream(queue["id"], 0), \
        group_name(tenant.id, "takeover")
    ids = publish_many(tenant, "orders", 60)
    wait_until(lambda: _pending_by_consumer(processes, key, group).get(victim_consumer, 0) > 0)
    processes.kill(victim)
    killed_at = time.monotonic()
    wait_until(lambda: victim_consumer not in _pending_by_consumer(processes, key, group),
               timeout=30)  # a reclaim pass would take its entries after 60 s idle
    taken_over_s = time.monotonic() - killed_at
    webhook.wait_for("/t", 60, timeout=40)
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/t"))
    assert set(counts) == set(ids)
    print(f"\nthe victim's entries taken over {taken_over_s:.1f}s after the SIGKILL; all 60 "
          f"delivered after {time.monotonic() - killed_at:.1f}s, "
          f"{sum(counts.values()) - 60} duplicates")


@pytest.mark.single_redis
def test_a_stalled_worker_loses_its_entries_but_nothing_is_lost_or_counted_twice(
        tenant, subscriptions, webhook, processes):
    """SIGSTOP past the dead-after time: the survivor takes over; after SIGCONT the stalled
    worker finishes what it was running. Every message arrives, and the subscription counts
    each one delivered once."""
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "stall", webhook.url("/s"), session_timeout_ms=60_000)
    webhook.delay_s["/s"] = 0.2
    processes.worker(threads=2)
    stalled = processes.worker(threads=2)
    ids = publish_many(tenant, "orders", 40)
    webhook.wait_for("/s", 4)
    stalled.send_signal(signal.SIGSTOP)
    try:
        webhook.wait_for("/s", 40, timeout=40)
    finally:
        stalled.send_signal(signal.SIGCONT)
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/s", quiet_s=3.0))
    assert set(counts) == set(ids)
    counters = processes.keys.subscription_counters(sub["id"])
    wait_until(lambda: processes.redis.hget(counters, "delivered") == "40")
    time.sleep(1.0)  # a late acknowledgement would count now
    assert processes.redis.hget(counters, "delivered") == "40"


@pytest.mark.single_redis
def test_duplicates_after_a_sigkill_are_bounded_by_the_prefetch(
        tenant, subscriptions, webhook, processes):
    """A worker holds at most WORKER_PREFETCH unacknowledged entries, so a SIGKILL can
    deliver at most that many messages twice."""
    queue = tenant.create_queue("orders")
    sub = subscriptions.create("orders", "bounded", webhook.url("/b"))
    webhook.delay_s["/b"] = 0.02
    victim = processes.worker(threads=2, env={"WORKER_PREFETCH": "3"})
    consumer = f"{sub['consumer_name']}@{_instance(processes, victim)}"
    key, group = processes.keys.stream(queue["id"], 0), \
        group_name(tenant.id, "bounded")
    ids = publish_many(tenant, "orders", 200)
    held = []
    while len(webhook.received("/b")) < 60:  # what the victim holds, sampled as it works
        held.append(_pending_by_consumer(processes, key, group).get(consumer, 0))
        time.sleep(0.01)
    assert 0 < max(held) <= 3, held  # without the setting: 16 (8 per thread)
    processes.kill(victim)
    processes.worker(threads=2)
    webhook.wait_for("/b", 200, timeout=60)
    counts = Counter(r.headers["x-mq-message-id"] for r in webhook.settle("/b", quiet_s=2.0))
    assert set(counts) == set(ids)
    assert sum(n - 1 for n in counts.values()) <= 3
