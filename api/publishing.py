"""Publishing: validate, record in the database, append to the topic's partition streams.

Order of the two writes, and why it is safe:
1. The message records are INSERTed and COMMITted first, with no offset.
2. Then the entries are XADDed to the partition streams.
3. Then the offsets are written to the records.
A `2xx` is answered only after step 2, so an acknowledged message is both in the database and
in the stream. If Redis fails at step 2 the client gets `503` and the committed records are
deleted again, so a client retry with the same `message_id` publishes it for real (a record
left behind would answer the retry as a duplicate of a message no stream holds). Should that
delete fail too, the record stays without an offset for the outbox sweep to hand over.
The reverse order (XADD first) could deliver a message whose record was never written: a
delivery the producer was told had failed, with no record to deduplicate a retry against.
If the process dies between 2 and 3 the record only lacks its offset; the sweep hands such a
record over again (at-least-once delivery: a duplicate, never a loss).
"""

from __future__ import annotations

import itertools
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from api.auth import Principal
from api.formats import publish_codec
from api.metrics import record_published
from api.schemas import validate_payload
from api.services import services
from broker.codec import PLAIN, Codec, EncodingError
from broker.envelope import Envelope
from broker.streams import TopicStreams
from models import MessageRecord, Topic
from models.base import new_id, utcnow
from models.bulk import copy_rows
from mq.crypto import cached_keyring
from mq.errors import (
    Conflict,
    Forbidden,
    PayloadTooLarge,
    SerializationError,
    TopicNotActive,
    TopicNotFound,
    ValidationError,
)

log = logging.getLogger(__name__)

BATCH_MAX_BYTES = 5 * 1024 * 1024
_round_robin: dict[str, itertools.count[int]] = {}


@dataclass(frozen=True)
class Published:
    """The answer for one message: its ids, where it went, and whether it was a duplicate."""

    message_id: str
    partition: int
    offset: str | None
    published_at: datetime
    duplicate: bool


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
    def of(cls, topic: Topic) -> PublishTarget:
        return cls(topic.id, topic.tenant_id, topic.name, topic.status, topic.partition_count,
                   topic.max_message_bytes, tuple(topic.allowed_producers or ()),
                   publish_codec(topic), topic.schema_subject, topic.schema_definition)


@dataclass
class _Prepared:
    """One message ready to store: its `message_records` row and its stream entry."""

    row: dict[str, Any]
    envelope: Envelope

    @property
    def message_id(self) -> str:
        return self.row["message_id"]


def check_producer(topic: PublishTarget, caller: Principal) -> None:
    """Archived topics take nothing; producer keys must be on a non-empty allow-list."""
    if topic.status == "archived":
        raise TopicNotActive(topic.name, topic.status)
    if caller.is_admin or not topic.allowed_producers:
        return
    if caller.key_name not in topic.allowed_producers:
        raise Forbidden(f"key '{caller.key_name}' may not publish to topic '{topic.name}'")


def publish(
    session: Session,
    streams: TopicStreams,
    topic: PublishTarget,
    caller: Principal,
    messages: Sequence[dict[str, Any]],
    *,
    batch: bool,
) -> list[Published]:
    """Publish `messages` (already schema-checked) to `topic`, in order; see module docstring."""
    check_producer(topic, caller)
    prepared = [prepare_message(topic, caller, m, i if batch else None)
                for i, m in enumerate(messages)]
    if batch:
        _check_batch_size(prepared)
    supplied = [m["message_id"] for m in messages if m.get("message_id")]
    known = _existing(session, topic.tenant_id, supplied) if supplied else {}
    stored: dict[str, _Prepared] = {}
    for item in prepared:
        if item.message_id not in known:
            stored.setdefault(item.message_id, item)
    if stored:
        known.update(_store_and_append(session, streams, topic, list(stored.values())))
        record_published(topic.id, topic.name, topic.tenant_id,
                         [item.row["payload_size"] for item in stored.values()])
    # A message is new only if this request stored it: a concurrent request that stored the
    # same id first makes it a duplicate here too (`_store_and_append` answers those so).
    return [replace(known[p.message_id],
                    duplicate=stored.get(p.message_id) is not p or known[p.message_id].duplicate)
            for p in prepared]


def prepare_message(topic: PublishTarget, caller: Principal, message: dict[str, Any],
             index: int | None) -> _Prepared:
    payload = message.get("payload")
    validate_payload(topic, payload, index)
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
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
        "id": new_id(),
        "tenant_id": topic.tenant_id,
        "topic_id": topic.id,
        "message_id": message.get("message_id") or new_id(),
        "message_key": message.get("key"),
        "correlation_id": message.get("correlation_id"),
        "trace_id": message.get("trace_id"),
        "producer_id": caller.key_name,
        "headers": message.get("headers") or {},
        "payload": payload,
        "payload_size": size,
        "content_type": message.get("content_type") or "application/json",
        "partition_id": _partition(topic, message, index),
        "offset_value": None,
        "status": "published",
        "retry_count": 0,
        "published_at": now,
        "expires_at": expires_at,
    }
    if not topic.codec.plain:
        row["payload"], row["headers"] = _encode(topic, row, index)
    envelope = Envelope(
        message_id=row["message_id"],
        payload=row["payload"],
        published_ms=int(now.timestamp() * 1000),
        key=row["message_key"],
        headers=row["headers"],
        correlation_id=row["correlation_id"],
        trace_id=row["trace_id"],
        content_type=row["content_type"],
        expires_ms=int(expires_at.timestamp() * 1000) if expires_at else None,
    )
    return _Prepared(row, envelope)


def _encode(topic: PublishTarget, row: dict[str, Any],
            index: int | None) -> tuple[Any, dict[str, Any]]:
    """The payload and headers as the topic stores them (see `broker.codec`)."""
    settings = services().settings
    keyring = cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)
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
        return zlib.crc32(key.encode()) % topic.partition_count
    counter = _round_robin.setdefault(topic.id, itertools.count())
    return next(counter) % topic.partition_count


def _at(index: int | None, field: str, problem: str) -> dict[str, Any]:
    if index is None:
        return {field: [problem]}
    return {"messages": {str(index): {field: [problem]}}}


def _check_batch_size(prepared: list[_Prepared]) -> None:
    total = sum(p.row["payload_size"] for p in prepared)
    if total > BATCH_MAX_BYTES:
        raise PayloadTooLarge(f"batch payloads add up to {total} bytes; at most "
                              f"{BATCH_MAX_BYTES} per batch")


def _existing(session: Session, tenant_id: str, message_ids: list[str]) -> dict[str, Published]:
    """Answers for message ids already in the tenant (generated ids need no look-up)."""
    rows = session.execute(
        select(MessageRecord.message_id, MessageRecord.partition_id, MessageRecord.offset_value,
               MessageRecord.published_at)
        .where(MessageRecord.tenant_id == tenant_id,
               MessageRecord.message_id.in_(set(message_ids)))
    )
    return {row.message_id: Published(*row, duplicate=True) for row in rows}


def _store_and_append(session: Session, streams: TopicStreams, topic: PublishTarget,
                      items: list[_Prepared]) -> dict[str, Published]:
    try:
        _insert_records(session, [item.row for item in items])
        session.commit()
    except IntegrityError:
        # A concurrent request published one of these message ids first: answer from its record.
        session.rollback()
        ids = [item.message_id for item in items]
        found = _existing(session, topic.tenant_id, ids)
        if len(found) == len(ids):
            return found
        if session.get(Topic, topic.id) is None:  # deleted since it was looked up
            raise TopicNotFound(topic.name) from None
        raise Conflict("a concurrent request published some of these message ids; "
                       "retry the request") from None
    try:
        offsets = streams.append_many(topic.id,
                                      [(i.row["partition_id"], i.envelope) for i in items])
    except RedisError:
        forget_records(session, [item.row["id"] for item in items])
        raise
    _record_offsets(session, [(item.row["id"], offset) for item, offset in
                              zip(items, offsets, strict=True)])
    return {
        item.message_id: Published(item.message_id, item.row["partition_id"], offset,
                                   item.row["published_at"], duplicate=False)
        for item, offset in zip(items, offsets, strict=True)
    }


def _insert_records(session: Session, rows: list[dict[str, Any]]) -> None:
    """A batch by COPY (a fraction of the CPU of a multi-row INSERT); a single message by the
    cached INSERT statement, which costs less than setting up a COPY."""
    records = MessageRecord.__table__
    if len(rows) == 1:
        session.execute(insert(records), rows)
    else:
        copy_rows(session, records, rows)


def forget_records(session: Session, record_ids: list[str]) -> None:
    """Delete the records of messages Redis refused (best effort; see module docstring)."""
    records = MessageRecord.__table__
    try:
        session.rollback()
        session.execute(delete(records).where(records.c.id.in_(record_ids)))
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.warning("records of %d unpublished message(s) left for the outbox sweep",
                    len(record_ids))


def _record_offsets(session: Session, offsets: list[tuple[str, str]]) -> None:
    """Write the stream offsets back to the records.

    Not worth waiting for a disk flush: the message is already durable in both stores, and a
    lost offset write only makes the outbox sweep hand the record over again (a duplicate).
    """
    records = MessageRecord.__table__
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    if on_postgresql:
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    if on_postgresql and len(offsets) > 1:
        # One statement for a batch, with the ids and offsets as two array parameters: its
        # text never changes, so it is compiled once (a VALUES list would be compiled anew,
        # row by row, for every batch).
        record_ids, stream_offsets = zip(*offsets, strict=True)
        session.execute(_SET_OFFSETS, {"ids": list(record_ids), "offsets": list(stream_offsets)})
    else:
        session.execute(
            update(records).where(records.c.id == bindparam("record_id"))
            .values(offset_value=bindparam("offset")),
            [{"record_id": record_id, "offset": offset} for record_id, offset in offsets],
        )
    session.commit()


_SET_OFFSETS = text(
    "UPDATE message_records SET offset_value = given.offset_value "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:offsets AS varchar[])) "
    "AS given(id, offset_value) WHERE message_records.id = given.id")
