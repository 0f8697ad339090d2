"""The delay set: delayed and scheduled publishes waiting in Redis until they are due.

A waiting message is a member of the sorted set `keys.delayed()` (member = its record id,
score = due time in ms) with its stream key and encoded entry in the hash
`keys.delayed_payloads()`. Every step is one Lua script, so it cannot be split:

- `park` adds a message and, when it is due before everything else waiting, publishes on the
  wake-up channel `keys.delay_wake()` so that a releaser sleeping until the old earliest time
  wakes up now (releasers sleep on the channel with a client-side timeout: Redis' own
  blocking timeouts are only as precise as its `hz` tick, 100 ms by default; a wake-up lost
  while a releaser reconnects costs at most its longest sleep, `MAX_SLEEP_MS` there);
- `release` moves every due message into its partition stream, in three steps that each
  touch one hash tag (the streams live under other tags than the delay set): take the due
  messages into the in-flight set `keys.delay_in_flight()`, append each to its stream once
  (the stream's append markers, `Keys.appended`: repeating the append answers the first
  offset), then drop them from the in-flight set and remember their offsets in the released
  markers (`keys.delay_released()` + `keys.delay_offsets()`), which lets the scheduler finish
  the database update after a crash and keeps the rebuild from parking a released message
  again (markers are trimmed after `MARKER_TTL_MS`). A releaser that dies between the steps
  leaves its messages in flight; they are taken again after `RETAKE_MS`, without a duplicate;
- `cancel` removes a waiting message; it fails once the message is in flight or released.
Times come from the Redis server clock (`TIME`).
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
from broker.streams import APPEND_CHUNK, TopicStreams

RELEASE_BATCH = 500
MARKER_TTL_MS = 3_600_000
#: Messages taken for release but not finished this long ago (their releaser died) are taken
#: again.
RETAKE_MS = 10_000


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
        self._take = LuaScript(redis, "broker", "delay_take")
        self._done = LuaScript(redis, "broker", "delay_done")
        self.streams = TopicStreams(redis, keys, max_len=stream_cap)
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
                self.keys.delay_released(), self.keys.delay_in_flight()]

    def _park_args(self, record_id: str, due_ms: int, topic_id: str, partition: int,
                   envelope: Envelope) -> list[Any]:
        data = json.dumps({"s": self.keys.stream(topic_id, partition),
                           "m": envelope.encode_data()}, separators=(",", ":"))
        return [record_id, due_ms, data]

    def release(self) -> Released:
        """Move every due message to its stream (in batches); see the module docstring."""
        offsets: dict[str, str] = {}
        while True:
            reply: list[Any] = self._take(
                keys=[self.keys.delayed(), self.keys.delayed_payloads(),
                      self.keys.delay_in_flight()],
                args=[RELEASE_BATCH, RETAKE_MS])
            taken = _by_stream(reply[1::2], reply[2::2])
            appended = self._append(taken)
            done: list[Any] = self._done(
                keys=[self.keys.delayed(), self.keys.delayed_payloads(),
                      self.keys.delay_in_flight(), self.keys.delay_released(),
                      self.keys.delay_offsets()],
                args=[MARKER_TTL_MS, RETAKE_MS,
                      *(value for pair in appended.items() for value in pair)])
            self._forget_markers(taken)
            offsets.update(appended)
            if (len(reply) - 1) // 2 < RELEASE_BATCH:  # {now, member, data, ...}
                next_due = int(done[1])
                return Released(int(done[0]), None if next_due < 0 else next_due, offsets)

    def _append(self, taken: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
        """Append the taken messages (stream -> [(record id, entry)]) to their streams, once
        each; their offsets by record id."""
        if not taken:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for stream, entries in taken.items():
            self.streams.queue_append_to(pipe, stream, entries)
        replies = iter(pipe.execute())
        offsets: dict[str, str] = {}
        for entries in taken.values():
            ids = [entry_id for _ in range(0, len(entries), APPEND_CHUNK)
                   for entry_id in str(next(replies)).split(",")]
            offsets.update(zip((record_id for record_id, _ in entries), ids, strict=True))
        return offsets

    def _forget_markers(self, taken: dict[str, list[tuple[str, str]]]) -> None:
        """Drop the append markers of the released messages (their offsets are remembered)."""
        if taken:
            pipe = self.redis.pipeline(transaction=False)
            for stream, entries in taken.items():
                pipe.hdel(self.keys.stream_markers(stream), *(rid for rid, _ in entries))
            pipe.execute()

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


def _by_stream(record_ids: list[str], payloads: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Taken messages grouped by their stream: stream -> [(record id, entry)]."""
    by_stream: dict[str, list[tuple[str, str]]] = {}
    for record_id, raw in zip(record_ids, payloads, strict=True):
        data = json.loads(raw)
        by_stream.setdefault(data["s"], []).append((record_id, data["m"]))
    return by_stream
