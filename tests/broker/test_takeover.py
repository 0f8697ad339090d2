"""Telling that a worker died: by its alive key expiring, or at once when its process is
gone from this node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from redis import Redis

from broker.heartbeats import local_node, process_gone
from broker.keys import Keys
from broker.takeover import GONE_REPORTED_S, DeadWorkers


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _announce(redis: Redis, keys: Keys, instance: str, *, pid: int, node: str | None,
              alive: bool = True) -> None:
    beat = {"id": f"worker:{instance}", "kind": "worker", "instance": instance, "pid": pid,
            "node": node, "ts": 0, "ttl_s": 60}
    redis.hset(keys.processes, beat["id"], json.dumps(beat))
    if alive:
        redis.set(keys.worker_alive(instance), beat["id"], px=60_000)


def test_an_instance_whose_process_is_gone_from_this_node_is_dead_at_once(
        redis_client: Redis) -> None:
    keys = Keys(f"takeover{uuid.uuid4().hex[:8]}")
    _announce(redis_client, keys, "gone", pid=_exited_pid(), node=local_node())
    _announce(redis_client, keys, "elsewhere", pid=_exited_pid(), node="another/node/ns")
    _announce(redis_client, keys, "me", pid=_exited_pid(), node=local_node())
    watcher = DeadWorkers(redis_client, keys, own_instance="me")
    try:
        assert watcher.newly_dead() == {"gone"}  # its alive key has 60 s to go
        # Reported again until what it read last has been idle long enough to be claimed.
        assert watcher.newly_dead() == {"gone"}
        time.sleep(GONE_REPORTED_S + 0.1)
        assert watcher.newly_dead() == set()
        redis_client.delete(keys.worker_alive("elsewhere"))
        assert watcher.newly_dead() == {"elsewhere"}  # another node: only the key tells
    finally:
        redis_client.delete(keys.processes, *(keys.worker_alive(i)
                                               for i in ("gone", "elsewhere", "me")))


def test_a_process_is_gone_once_it_has_exited_and_not_before() -> None:
    assert process_gone(_exited_pid())
    assert not process_gone(os.getpid())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        assert not process_gone(sleeper.pid)
        sleeper.kill()
        sleeper.wait()
