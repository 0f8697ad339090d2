"""Process heartbeats: workers and schedulers announce themselves in one Redis hash.

Each process writes `{ns}:procs[<id>] = {"id", "kind", "host", "node", "pid", "ts", "ttl_s",
...}` every few seconds; a beat older than its `ttl_s` counts as dead and is pruned by readers.
`node` names the kernel and process namespace the pid belongs to (`local_node()`), so a
process can tell that another one on its own machine is gone without waiting for its beat.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.connection import RedisClient
from broker.keys import Keys
from broker.scripts import LuaScript

#: How often workers and schedulers beat (`Heartbeat.beat`).
HEARTBEAT_S = 1.0


def local_node() -> str | None:
    """What makes a pid mean one process: this boot of this kernel and this pid namespace
    (Linux). None where that cannot be told; then no pid is ever checked."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_gone(pid: int) -> bool:
    """True when no process `pid` runs on this node (an unreaped zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


class Heartbeat:
    """The heartbeat of this process."""

    def __init__(self, redis: RedisClient, keys: Keys, kind: str, *, ttl_s: float = 15,
                 alive_as: str | None = None, fixed: dict[str, Any] | None = None) -> None:
        self.redis = redis
        #: Fields every beat carries (a worker's pools, threads and instance).
        self.fixed = fixed or {}
        self.keys = keys
        self.kind = kind
        self.ttl_s = ttl_s
        #: A worker's broker instance: each beat also renews its `Keys.worker_alive` key.
        self.alive_as = alive_as
        self.host = socket.gethostname()
        self.node = local_node()
        self.pid = os.getpid()
        self.id = f"{kind}:{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"

    def beat(self, **extra: Any) -> None:
        now = time.time()
        record = {"id": self.id, "kind": self.kind, "host": self.host, "node": self.node,
                  "pid": self.pid,
                  "ts": now, "ttl_s": self.ttl_s,
                  "last_heartbeat": datetime.fromtimestamp(now, UTC).isoformat(
                      timespec="milliseconds").replace("+00:00", "Z"),
                  **self.fixed, **extra}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.processes, self.id, json.dumps(record))
        if self.alive_as is not None:
            pipe.set(self.keys.worker_alive(self.alive_as), self.id,
                     px=max(1, int(self.ttl_s * 1000)))
        pipe.execute()

    def stop(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.keys.processes, self.id)
        if self.alive_as is not None:
            pipe.delete(self.keys.worker_alive(self.alive_as))
        pipe.execute()


def live_processes(redis: RedisClient, keys: Keys) -> list[dict[str, Any]]:
    """Heartbeats that are still fresh; stale ones are removed from the hash."""
    now = time.time()
    live, stale = [], []
    for process_id, raw in redis.hgetall(keys.processes).items():
        beat = json.loads(raw)
        if now - beat.get("ts", 0) > beat.get("ttl_s", 15):
            stale.append(process_id)
        else:
            live.append(beat)
    if stale:
        redis.hdel(keys.processes, *stale)
    return live


class Lease:
    """A lease on one Redis key: the holder keeps it while it renews, and a holder that dies
    loses it when `ttl_ms` runs out.

    The scheduler holds one for leadership — every job of the scheduler is atomic or locked on
    its own, so leadership decides nothing but what `GET /status` shows — and one while it
    rebuilds the delay set.
    """

    def __init__(self, redis: RedisClient, key: str, owner: str, *, ttl_ms: int) -> None:
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._hold = LuaScript(redis, "broker", "lock_hold")
        self._drop = LuaScript(redis, "broker", "lock_drop")

    def renew(self) -> bool:
        """Take or keep the lease; True while this process holds it."""
        return bool(self._hold(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up, if this process still holds it."""
        self._drop(keys=[self.key], args=[self.owner])
