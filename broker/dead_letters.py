"""Dead letters: a subscription's failed messages, kept for listing, redrive and purge.

Each subscription has a dead-letter stream (`Keys.dead_letters`). An entry holds `e`, the
dead-letter entry of docs/api.md (`id`, `message_id`, `subscription_id`, `original_*`, `key`,
`headers`, `payload`, `failure_reason`, `error_message`, `retry_count`, `failed_at`), and `m`,
the original stream envelope, so a redrive delivers exactly the original message again.
The same entry is also published (as its payload) on the subscription's dead-letter topic.
Redrive sends entries back to the one subscription through its pool's direct stream with the
attempt count reset, never to the topic stream, and removes them from this listing: append
(once per dead letter, a marker in the pool stream's tag), then delete, so a crash or a
concurrent redrive between the two steps never delivers a dead letter twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, cast

from broker.connection import RedisClient
from broker.delivery import POOL_STREAM_CAP, Route, delivery_message
from broker.envelope import FIELD, Envelope
from broker.keys import Keys
from broker.scripts import LuaScript

#: A subscription's dead-letter topic is `<topic name>` + this, unless it names another one.
DEAD_LETTER_SUFFIX = ".deadletter"
#: Dead letters kept per subscription (approximate cap; oldest dropped first).
DEAD_LETTER_CAP = 100_000
#: How long a delivery stays marked as dead-lettered (and a dead letter as redriven): the
#: window in which repeating a step of either is a no-op.
DEAD_LETTER_MARKER_TTL_MS = 3_600_000
REASONS = ("error", "permanent", "max_deliveries", "schema", "decrypt", "expired")


def iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class DeadLetterEntry:
    """The dead-letter entry of docs/api.md for one failed delivery (field order = JSON order)."""

    id: str
    message_id: str
    subscription_id: str
    original_topic: str
    original_partition: int
    original_offset: str
    original_timestamp: str
    key: str | None
    headers: dict[str, Any]
    payload: Any
    failure_reason: str
    error_message: str | None
    retry_count: int
    failed_at: str

    @classmethod
    def of(cls, *, subscription_id: str, topic_name: str, partition: int, offset: str,
           envelope: Envelope, reason: str, error_message: str | None,
           retry_count: int) -> DeadLetterEntry:
        """The entry of one delivery failing now."""
        return cls(
            id=str(uuid.uuid4()),
            message_id=envelope.message_id,
            subscription_id=subscription_id,
            original_topic=topic_name,
            original_partition=partition,
            original_offset=offset,
            original_timestamp=iso_ms(envelope.published_ms),
            key=envelope.key,
            headers=envelope.headers,
            payload=envelope.payload,
            failure_reason=reason,
            error_message=(error_message or "")[:2000] or None,
            retry_count=retry_count,
            failed_at=iso_ms(int(time.time() * 1000)),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeadLetterEntry:
        """An entry as stored (`as_dict`); fields it lacks are None."""
        values: dict[str, Any] = {spec.name: data.get(spec.name) for spec in fields(cls)}
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that was dead-lettered: its entry, and the message its dead-letter topic
    received (at `offset` of partition 0 of `topic_id`)."""

    entry: DeadLetterEntry
    route: Route
    topic_id: str
    offset: str
    envelope: Envelope


def topic_envelope(entry: DeadLetterEntry) -> Envelope:
    """The message a dead-letter topic's subscribers receive: the entry as its payload."""
    return Envelope(
        message_id=entry.id,
        payload=entry.as_dict(),
        published_ms=int(time.time() * 1000),
        key=entry.key,
        headers={"x-mq-failure-reason": entry.failure_reason,
                 "x-mq-subscription-id": entry.subscription_id},
    )


def list_entries(redis: RedisClient, keys: Keys, subscription_id: str, *, limit: int,
                 after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` entries, newest first, and the stream id to continue after (or None):
    entries dead-lettered meanwhile come before the first page, never inside the next."""
    end = f"({after}" if after else "+"
    rows = _entries(redis.xrevrange(keys.dead_letters(subscription_id), max=end, min="-",
                                    count=limit + 1))
    items = [json.loads(fields["e"]) for _, fields in rows[:limit]]
    next_after = rows[limit - 1][0] if len(rows) > limit else None
    return items, next_after


def purge(redis: RedisClient, keys: Keys, subscription_id: str) -> int:
    key = keys.dead_letters(subscription_id)
    pipe = redis.pipeline(transaction=True)
    pipe.xlen(key)
    pipe.delete(key)
    count, _ = pipe.execute()
    return int(count)


def redrive(
    redis: RedisClient,
    keys: Keys,
    subscription_id: str,
    pool: str,
    *,
    ids: Sequence[str] | None = None,
    max_messages: int = 100,
) -> int:
    """Send entries (by entry `id`, or the oldest `max_messages`) back to the subscription."""
    key = keys.dead_letters(subscription_id)
    wanted = set(ids) if ids is not None else None
    markers: list[str] = []
    messages: list[str] = []
    stream_ids: list[str] = []
    for stream_id, stored in _candidates(redis, key, wanted, max_messages):
        entry = DeadLetterEntry.from_dict(json.loads(stored["e"]))
        envelope = stored.get("m") or Envelope(
            message_id=entry.message_id, payload=entry.payload, published_ms=0,
            key=entry.key, headers=entry.headers or {}).encode()[FIELD]
        message = delivery_message(pool, subscription_id, int(entry.original_partition),
                                   entry.original_offset, envelope,
                                   options={"redriven_from": entry.id})
        markers.append(keys.redrive_marker(pool, stream_id))
        messages.append(message.encode().decode())
        stream_ids.append(stream_id)
    if not stream_ids:
        return 0
    script = LuaScript(redis, "broker", "dead_letter_redrive")
    script(keys=[keys.pool_stream(pool), *markers],
           args=[POOL_STREAM_CAP, DEAD_LETTER_MARKER_TTL_MS, *messages])
    return int(redis.xdel(key, *stream_ids))


def _candidates(redis: RedisClient, key: str, wanted: set[str] | None,
                max_messages: int) -> list[tuple[str, dict[str, str]]]:
    if wanted is None:
        return _entries(redis.xrange(key, count=max_messages))
    found: list[tuple[str, dict[str, str]]] = []
    for stream_id, stored in _entries(redis.xrange(key)):
        if json.loads(stored["e"]).get("id") in wanted:
            found.append((stream_id, stored))
    return found


def _entries(reply: object) -> list[tuple[str, dict[str, str]]]:
    """XRANGE / XREVRANGE rows as decoded text (`broker.connection` decodes replies)."""
    return cast(list[tuple[str, dict[str, str]]], reply)
