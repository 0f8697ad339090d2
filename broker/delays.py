"""The delay set: delayed and scheduled publishes waiting in Redis until they are due.

A waiting message is a member of the sorted set `keys.delayed()` (member = its record id,
score = due time in ms) with its stream key and encoded entry in the hash
`keys.delayed_payloads()`. Every step is one Lua script, so it cannot be split:

- `park` adds a message and, when it is due before everything else waiting, publishes on the
  wake-up channel `keys.delay_wake()` so that a releaser sleeping until the old earliest time
  wakes up now (releasers sleep on the channel with a client-side timeout: Redis' own
  blocking timeouts are only as precise as its `hz` tick, 100 ms by default; a wake-up lost
  while a releaser reconnects costs at most its longest sleep, `MAX_SLEEP_MS` there);
- `release` moves every due message into its partition stream and remembers the offset in
  the released markers (`keys.delay_released()` + `keys.delay_offsets()`), which lets the
  scheduler finish the database update after a crash and keeps the rebuild from parking a
  released message again (markers are trimmed after `MARKER_TTL_MS`);
- `cancel` removes a waiting message; it fails once the message was released.
Times come from the Redis server clock (`TIME`). The scripts touch keys of different hash
tags (the delay keys and the partition streams) and so assume a single Redis primary, as the
other broker scripts do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis.client import Pipeline, PubSub

from broker.connection import RedisClient
from broker.envelope import Envelope
from broker.keys import Keys
from broker.scripts import LuaScript

RELEASE_BATCH = 500
MARKER_TTL_MS = 3_600_000


@dataclass(frozen=True)
class Released:
    """One pass of the releaser: what moved, the server time, the next due time."""

    now_ms: int
    next_due_ms: int | None
    offsets: dict[str, str]


class DelaySet:
    """Park, release and cancel delayed messages (see the module docstring)."""

    def __init__(self, redis: RedisClient, keys: Keys, *, stream_cap: int) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_cap = stream_cap
        self._park = LuaScript(redis, "broker", "delay_park")
        self._release = LuaScript(redis, "broker", "delay_release")
        self._cancel = LuaScript(redis, "broker", "delay_cancel")

    def park(self, record_id: str, due_ms: int, topic_id: str, partition: int,
             envelope: Envelope) -> bool:
        """Wait `record_id` until `due_ms`; False if it was released already."""
        return int(self._park(keys=self._park_keys(),
                              args=self._park_args(record_id, due_ms, topic_id, partition,
                                                   envelope))) == 1

    def queue_park(self, pipe: Pipeline, record_id: str, due_ms: int, topic_id: str,
                   partition: int, envelope: Envelope) -> None:
        """`park` queued on a pipeline (its reply: 1 parked, -1 released already)."""
        self._park.queue(pipe, self._park_keys(),
                         self._park_args(record_id, due_ms, topic_id, partition, envelope))

    def _park_keys(self) -> list[str]:
        return [self.keys.delayed(), self.keys.delayed_payloads(), self.keys.delay_wake(),
                self.keys.delay_released()]

    def _park_args(self, record_id: str, due_ms: int, topic_id: str, partition: int,
                   envelope: Envelope) -> list[Any]:
        data = json.dumps({"s": self.keys.stream(topic_id, partition),
                           "m": envelope.encode_data()}, separators=(",", ":"))
        return [record_id, due_ms, data]

    def release(self) -> Released:
        """Move every due message to its stream (in batches); see the module docstring."""
        offsets: dict[str, str] = {}
        while True:
            reply: list[Any] = self._release(
                keys=[self.keys.delayed(), self.keys.delayed_payloads(),
                      self.keys.delay_released(), self.keys.delay_offsets()],
                args=[RELEASE_BATCH, self.stream_cap, MARKER_TTL_MS])
            pairs = reply[2:]
            offsets.update(zip(pairs[::2], pairs[1::2], strict=True))
            if len(pairs) // 2 < RELEASE_BATCH:
                next_due = int(reply[1])
                return Released(int(reply[0]), None if next_due < 0 else next_due, offsets)

    def cancel(self, record_id: str) -> bool:
        """Remove a waiting message; False if it is not waiting (released, or never parked)."""
        return int(self._cancel(keys=[self.keys.delayed(), self.keys.delayed_payloads()],
                                args=[record_id])) == 1

    def waiting(self, record_ids: list[str]) -> set[str]:
        """Which of `record_ids` are in the delay set."""
        if not record_ids:
            return set()
        scores = self.redis.zmscore(self.keys.delayed(), record_ids)
        return {rid for rid, score in zip(record_ids, scores, strict=True) if score is not None}

    def released_offsets(self, record_ids: list[str]) -> dict[str, str]:
        """Offsets of those of `record_ids` released within the marker lifetime."""
        if not record_ids:
            return {}
        found = cast(list[str | None], self.redis.hmget(self.keys.delay_offsets(), record_ids))
        return {rid: off for rid, off in zip(record_ids, found, strict=True) if off}

    def subscribe(self) -> PubSub:
        """A subscription to the wake-up channel, for `wait`."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.delay_wake())
        return pubsub

    @staticmethod
    def wait(pubsub: PubSub, block_ms: int) -> None:
        """Sleep up to `block_ms`, or until a message due earlier is parked."""
        if pubsub.get_message(timeout=block_ms / 1000) is not None:
            while pubsub.get_message(timeout=0) is not None:  # drain the burst
                pass
