"""Retries waiting for their backoff, parked per pool in Redis, never in a worker's memory.

A retry waits in its pool's sorted set (`Keys.retry_due`, score = due time by the Redis
clock) with its encoded dramatiq message in `Keys.retry_payloads`. The scheduler releases due
retries atomically (`retry_release.lua`: two releasers never double-release) into the pool's
direct stream (`Keys.pool_stream`), which only that pool's workers read: a retry goes to its
own subscription only, never back to the topic stream (that would redeliver it to every
subscription).
"""

from __future__ import annotations

import uuid

from broker.connection import RedisClient
from broker.delivery import POOL_STREAM_CAP
from broker.keys import Keys
from broker.scripts import LuaScript

#: Retries moved per script call (each call is one short step for Redis).
RELEASE_BATCH = 500


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
        moved = 0
        while True:
            count = int(self._release(
                keys=[self.keys.retry_due(pool), self.keys.retry_payloads(pool),
                      self.keys.pool_stream(pool)],
                args=[RELEASE_BATCH, POOL_STREAM_CAP]))
            moved += count
            if count < RELEASE_BATCH:
                return moved
