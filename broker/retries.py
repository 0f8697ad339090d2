"""Retries waiting for their backoff, parked per pool in Redis, never in a worker's memory.

A retry waits in its pool's sorted set (`Keys.retry_due`, score = due time by the Redis
clock) with its encoded dramatiq message in `Keys.retry_payloads` (a message sent with
`delay=` waits there too). The scheduler and the pool's consumers release due retries
atomically (`retry_release.lua`: two releasers never double-release) into the pool's
direct stream (`Keys.pool_stream`), which only that pool's workers read: a retry goes to its
own subscription only, never back to the topic stream (that would redeliver it to every
subscription).
"""

from __future__ import annotations

import threading
import time
import uuid

from broker.connection import RedisClient
from broker.delivery import POOL_STREAM_CAP
from broker.keys import Keys
from broker.scripts import LuaScript

#: Retries moved per script call (each call is one short step for Redis).
RELEASE_BATCH = 500
#: How often a pool consumer looks for due retries parked by another process (those parked
#: in its own process are released when due: `Releaser.due_in`).
RELEASE_CHECK_S = 1.0


class RetrySet:
    """The retry sets of every pool, under one key namespace."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.keys = keys
        self._park = LuaScript(redis, "broker", "retry_park")
        self._release = LuaScript(redis, "broker", "retry_release")

    def park(self, pool: str, message: str, delay_ms: int) -> None:
        """Wait the encoded dramatiq `message` for `delay_ms` in `pool`'s retry set."""
        self._park(keys=[self.keys.retry_due(pool), self.keys.retry_payloads(pool)],
                   args=[uuid.uuid4().hex, int(delay_ms), message])

    def release(self, pool: str) -> int:
        """Move every due retry of `pool` into its direct stream; returns how many moved."""
        return self.release_due(pool)[0]

    def release_due(self, pool: str) -> tuple[int, float | None]:
        """`release`, and the seconds until the next waiting retry is due (None: none waits),
        by the Redis clock."""
        moved = 0
        while True:
            count, wait_ms = self._release(
                keys=[self.keys.retry_due(pool), self.keys.retry_payloads(pool),
                      self.keys.pool_stream(pool)],
                args=[RELEASE_BATCH, POOL_STREAM_CAP])
            moved += int(count)
            if int(count) < RELEASE_BATCH:
                return moved, (int(wait_ms) / 1000 if int(wait_ms) >= 0 else None)


class Releaser:
    """When one pool consumer releases its pool's due retries (and messages sent with a
    delay): when one parked in its own process is due, else every `RELEASE_CHECK_S`, so a
    broker used without the scheduler still runs them. Monotonic seconds throughout."""

    def __init__(self, retries: RetrySet, pool: str) -> None:
        self.retries = retries
        self.pool = pool
        self.at = 0.0
        self._lock = threading.Lock()

    def due_in(self, delay_ms: int) -> None:
        """A retry of the pool was parked in this process (any thread)."""
        due = time.monotonic() + delay_ms / 1000
        with self._lock:
            self.at = min(self.at, due)

    def release_if_due(self, now: float) -> int:
        """Release what is due, if it is time to look; returns how many moved."""
        if now < self.at:
            return 0
        with self._lock:
            self.at = now + RELEASE_CHECK_S
        moved, wait_s = self.retries.release_due(self.pool)
        if wait_s is not None:
            with self._lock:
                self.at = min(self.at, now + wait_s)
        return moved
