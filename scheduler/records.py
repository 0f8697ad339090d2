"""Stream entries rebuilt from message records (the database is the source of truth)."""

from __future__ import annotations

from broker.envelope import Envelope
from models import MessageRecord


def due_ms(record: MessageRecord) -> int:
    due = record.scheduled_at or record.published_at
    return int(due.timestamp() * 1000)


def record_envelope(record: MessageRecord) -> Envelope:
    """The stream entry of a record, as the API built it when it was published."""
    expires = record.expires_at
    return Envelope(
        message_id=record.message_id, payload=record.payload, published_ms=due_ms(record),
        key=record.message_key, headers=record.headers or {},
        correlation_id=record.correlation_id, trace_id=record.trace_id,
        content_type=record.content_type,
        expires_ms=int(expires.timestamp() * 1000) if expires else None)
