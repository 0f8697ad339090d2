"""Preparing messages: the `message_records` row and the stream entry of each publish."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from broker.envelope import Envelope
from formats.codec import PLAIN, Codec, EncodingError
from formats.encryption import Keyring
from models import MessageRecord, Topic
from models.base import fast_id, new_id, utcnow
from models.bulk import compact_json
from mq.errors import PayloadTooLarge, SerializationError, ValidationError

BATCH_MAX_BYTES = 5 * 1024 * 1024
_round_robin: dict[str, itertools.count[int]] = {}


@dataclass(frozen=True)
class PublishTarget:
    """What publishing needs of a topic: an immutable snapshot, safe to cache and share."""

    id: str
    tenant_id: str
    name: str
    status: str
    partition_count: int
    max_message_bytes: int
    allowed_producers: tuple[str, ...]
    codec: Codec = PLAIN
    schema_subject: str | None = None
    schema_definition: Any = None

    @classmethod
    def of(cls, topic: Topic, codec: Codec = PLAIN) -> PublishTarget:
        return cls(topic.id, topic.tenant_id, topic.name, topic.status, topic.partition_count,
                   topic.max_message_bytes, tuple(topic.allowed_producers or ()), codec,
                   topic.schema_subject, topic.schema_definition)


@dataclass
class Prepared:
    """One message ready to store: its `message_records` row, its stream entry, and (for a
    delayed or scheduled message) when it is due."""

    row: dict[str, Any]
    envelope: Envelope
    due_ms: int | None = None
    #: Whether the producer chose the message id (a generated one cannot be a duplicate).
    given_id: bool = False
    #: The stored payload's JSON when already made (for its size), spliced into the entry.
    payload_json: str | None = None

    @property
    def entry(self) -> str:
        """The stream entry's text."""
        return self.envelope.encode_data(self.payload_json)

    @classmethod
    def of_record(cls, record: MessageRecord) -> Prepared:
        """A stored record, ready to be appended again (the database is the source of truth)."""
        row = {column.key: getattr(record, column.key)
               for column in MessageRecord.__table__.columns}
        return cls(row, envelope_of(row))

    @property
    def message_id(self) -> str:
        return self.row["message_id"]

    @property
    def record_id(self) -> str:
        return self.row["id"]

    @property
    def topic_id(self) -> str:
        return self.row["topic_id"]

    @property
    def partition(self) -> int:
        return self.row["partition_id"]


def prepare_message(topic: PublishTarget, producer: str | None, message: dict[str, Any],
                    index: int | None = None, *, keyring: Keyring | None = None) -> Prepared:
    """Row and entry of one message (already schema-checked) for `topic`.

    `index` is the message's place in a batch (for error details); `keyring` encrypts for
    topics that ask for it. Raises `PayloadTooLarge`, `SerializationError` and
    `ValidationError` (a partition the topic does not have)."""
    payload = message.get("payload")
    payload_json = compact_json(payload)
    size = len(payload_json.encode())  # what `max_message_bytes` bounds
    if size > topic.max_message_bytes:
        raise PayloadTooLarge(
            f"message is {size} bytes; topic '{topic.name}' takes at most "
            f"{topic.max_message_bytes}",
            _at(index, "payload", f"larger than {topic.max_message_bytes} bytes"),
        )
    now = utcnow()
    ttl = message.get("ttl_ms")
    expires_at = now + timedelta(milliseconds=ttl) if ttl else None
    row = {
        "id": fast_id(),
        "tenant_id": topic.tenant_id,
        "topic_id": topic.id,
        "message_id": message.get("message_id") or new_id(),
        "message_key": message.get("key"),
        "correlation_id": message.get("correlation_id"),
        "trace_id": message.get("trace_id"),
        "producer_id": producer,
        "headers": message.get("headers") or {},
        "payload": payload,
        "payload_size": size,
        "content_type": message.get("content_type") or "application/json",
        "partition_id": _partition(topic, message, index),
        "offset_value": None,
        "status": "published",
        "retry_count": 0,
        "published_at": now,
        "scheduled_at": None,
        "expires_at": expires_at,
    }
    if not topic.codec.plain:
        row["payload"], row["headers"] = _encode(topic, row, index, keyring)
    return Prepared(row, envelope_of(row), given_id=bool(message.get("message_id")),
                    payload_json=payload_json if topic.codec.plain else None)


def envelope_of(row: dict[str, Any]) -> Envelope:
    """The stream entry of a record row; a scheduled message's time is its due time."""
    moment: datetime = row.get("scheduled_at") or row["published_at"]
    expires: datetime | None = row.get("expires_at")
    return Envelope(
        message_id=row["message_id"],
        payload=row["payload"],
        published_ms=int(moment.timestamp() * 1000),
        key=row.get("message_key"),
        headers=row.get("headers") or {},
        correlation_id=row.get("correlation_id"),
        trace_id=row.get("trace_id"),
        content_type=row.get("content_type") or "application/json",
        expires_ms=int(expires.timestamp() * 1000) if expires else None,
    )


def scheduled(prepared: Prepared, deliver_at: datetime, ttl_ms: int | None) -> Prepared:
    """The message waiting until `deliver_at` (never before now): a `scheduled` record whose
    time-to-live counts from its due time."""
    deliver_at = max(deliver_at, prepared.row["published_at"])
    expires_at = deliver_at + timedelta(milliseconds=ttl_ms) if ttl_ms else None
    row = {**prepared.row, "status": "scheduled", "scheduled_at": deliver_at,
           "expires_at": expires_at}
    return replace(prepared, row=row, envelope=envelope_of(row),
                   due_ms=int(deliver_at.timestamp() * 1000))


def check_batch_size(prepared: Sequence[Prepared]) -> None:
    total = sum(p.row["payload_size"] for p in prepared)
    if total > BATCH_MAX_BYTES:
        raise PayloadTooLarge(f"batch payloads add up to {total} bytes; at most "
                              f"{BATCH_MAX_BYTES} per batch")


def _encode(topic: PublishTarget, row: dict[str, Any], index: int | None,
            keyring: Keyring | None) -> tuple[Any, dict[str, Any]]:
    """The payload and headers as the topic stores them (see `formats.codec`)."""
    try:
        return topic.codec.encode(keyring, topic.tenant_id, row["message_id"], row["payload"],
                                  row["headers"])
    except EncodingError as exc:
        raise SerializationError(
            f"the payload cannot be encoded as {topic.codec.message_format}: {exc}",
            _at(index, "payload", str(exc))) from None


def _partition(topic: PublishTarget, message: dict[str, Any], index: int | None) -> int:
    """Explicit partition, else a stable hash of the key, else round robin."""
    explicit = message.get("partition")
    if explicit is not None:
        if explicit >= topic.partition_count:
            raise ValidationError(
                "partition out of range",
                _at(index, "partition", f"topic has {topic.partition_count} partition(s)"),
            )
        return explicit
    if topic.partition_count == 1:
        return 0
    key = message.get("key")
    if key is not None:
        return key_partition(key, topic.partition_count)
    counter = _round_robin.setdefault(topic.id, itertools.count())
    return next(counter) % topic.partition_count


def key_partition(key: str, partition_count: int) -> int:
    """The partition of a message key: the same key always lands on the same partition."""
    return zlib.crc32(key.encode()) % partition_count


def _at(index: int | None, field: str, problem: str) -> dict[str, Any]:
    if index is None:
        return {field: [problem]}
    return {"messages": {str(index): {field: [problem]}}}
