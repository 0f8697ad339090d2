"""One worker process serves 1,000 subscriptions with a handful of threads and connections.

It runs on the single Redis only (`single_redis`): the cluster run, which counts connections
per master, costs half a minute of every suite for a figure that changes only with the
consumer's connection handling. Remove the mark to run it on the cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REDIS_URL
from tests.delivery.conftest import publish_many

TOPICS = 200
GROUPS_PER_TOPIC = 5
REDIS_PORT = urlsplit(REDIS_URL).port or 6379


def redis_connections(pid: int, port: int = REDIS_PORT) -> int:
    """TCP connections of process `pid` to `port` (its socket inodes matched in /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == port and parts[9] in inodes:
                count += 1
    return count


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one CPU process `pid` used over `seconds`."""
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


@pytest.mark.single_redis
def test_one_worker_process_serves_1000_subscriptions(tenant, subscriptions, webhook, processes):
    started = time.monotonic()
    for t in range(TOPICS):
        tenant.create_queue(f"t{t}")
        for g in range(GROUPS_PER_TOPIC):
            subscriptions.create(f"t{t}", f"g{g}", webhook.url(f"/s/{t}/{g}"),
                                 session_timeout_ms=30_000)
    created_s = time.monotonic() - started
    worker = processes.worker(threads=8)
    beat = next(b for b in processes.beats("worker") if b["pid"] == worker.pid)
    assert beat["subscriptions"] >= TOPICS * GROUPS_PER_TOPIC

    for t in range(TOPICS):
        publish_many(tenant, f"t{t}", 1, payload=lambda _i, t=t: {"topic": t})
    expected = TOPICS * GROUPS_PER_TOPIC
    deadline = time.monotonic() + 60
    while len(webhook.requests) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    paths = sorted(r.path for r in webhook.requests)
    wanted = sorted(f"/s/{t}/{g}" for t in range(TOPICS) for g in range(GROUPS_PER_TOPIC))
    assert paths == wanted, "every subscription got its message exactly once"

    ports = [int(node.rsplit(":", 1)[1]) for node in processes.settings.redis_cluster_nodes] \
        or [REDIS_PORT]
    threads = thread_count(worker.pid)
    connections = {port: redis_connections(worker.pid, port) for port in ports}
    idle_cpu = cpu_share(worker.pid, 1.5)
    print(f"\n1,000 subscriptions on one worker process (8 worker threads): {threads} threads, "
          f"Redis connections per server {sorted(connections.values())}, {idle_cpu:.1%} of a "
          f"CPU while idle (set-up {created_s:.1f}s)")
    assert threads < 20
    assert sum(connections.values()) > 0
    assert max(connections.values()) < 20

    # 200 queue deletions take their 1,000 subscriptions with them, five times fewer calls
    # than the fixture's one deletion per subscription.
    subscriptions.created.clear()
    for t in range(TOPICS):
        assert tenant.admin.delete(f"/queues/t{t}").status_code == 204
