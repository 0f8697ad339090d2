"""Message records and consumption records (the seed's `message_records` and
`consumption_records`), partitioned by day (`models.partitions`), and the idempotency keys.

A partitioned table's primary key must hold its partition key, so the records' keys are
`(id, published_at)` and `(id, consumed_at)`; look-ups by id alone probe every partition's
key index and say so where they are made."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JSONType, UTCDateTime, new_id, utcnow

#: How long a tenant's `message_id` stays taken (docs/api.md "Idempotency").
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: How far another host's clock may be off: record times are bounded by now + this in
#: look-ups (which skips the days created ahead), and deliveries are looked for from a
#: message's publish time - this on.
CLOCK_SKEW = timedelta(hours=1)


class MessageRecord(Base):
    """One published message. `offset_value` is the Redis stream entry id once handed over.
    A `message_id` may repeat after `IDEMPOTENCY_WINDOW`: the newest record is the message's."""

    __tablename__ = "message_records"
    __table_args__ = (PrimaryKeyConstraint("id", "published_at"),
                      {"postgresql_partition_by": "RANGE (published_at)"})

    id: Mapped[str] = mapped_column(String(36), default=new_id)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    topic_id: Mapped[str] = mapped_column(
        ForeignKey("message_topics.id", ondelete="CASCADE"), nullable=False
    )
    message_key: Mapped[str | None] = mapped_column(String(500))
    message_id: Mapped[str] = mapped_column(String(200), nullable=False)
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    trace_id: Mapped[str | None] = mapped_column(String(100))
    producer_id: Mapped[str | None] = mapped_column(String(200))

    headers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict, nullable=False)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    payload_size: Mapped[int] = mapped_column(Integer, nullable=False)
    content_type: Mapped[str] = mapped_column(
        String(100), default="application/json", nullable=False
    )

    partition_id: Mapped[int] = mapped_column(Integer, nullable=False)
    offset_value: Mapped[str | None] = mapped_column(String(48))

    status: Mapped[str] = mapped_column(String(20), default="published", nullable=False)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# The outbox sweep looks for records committed but not yet handed to Redis (no offset).
Index("ix_message_records_unhanded", MessageRecord.offset_value, MessageRecord.published_at)
Index("ix_message_records_topic_published", MessageRecord.topic_id, MessageRecord.published_at)
# `GET /messages/{message_id}` and duplicates' answers: the newest record of a message id.
Index("ix_message_records_tenant_message", MessageRecord.tenant_id, MessageRecord.message_id,
      MessageRecord.published_at)
# Scheduled messages (the delay set's rebuild, and whether a day may be dropped yet).
Index("ix_message_records_scheduled", MessageRecord.id,
      postgresql_where=text("status = 'scheduled'"))


class ConsumptionRecord(Base):
    """One delivery attempt of one message to one subscription."""

    __tablename__ = "consumption_records"
    __table_args__ = (PrimaryKeyConstraint("id", "consumed_at"),
                      {"postgresql_partition_by": "RANGE (consumed_at)"})

    id: Mapped[str] = mapped_column(String(36), default=new_id)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("message_subscriptions.id", ondelete="CASCADE"), nullable=False
    )
    message_id: Mapped[str] = mapped_column(String(200), nullable=False)
    consumer_instance: Mapped[str] = mapped_column(String(200), nullable=False)
    partition_id: Mapped[int | None] = mapped_column(Integer)
    offset_value: Mapped[str | None] = mapped_column(String(48))

    status: Mapped[str] = mapped_column(String(20), nullable=False)
    processing_time_ms: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    consumed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# A subscription's deliveries, newest first, cursor-paginated on (consumed_at, id).
Index("ix_consumption_records_subscription_consumed", ConsumptionRecord.subscription_id,
      ConsumptionRecord.consumed_at, ConsumptionRecord.id)
Index("ix_consumption_records_message", ConsumptionRecord.tenant_id, ConsumptionRecord.message_id)


class IdempotencyKey(Base):
    """A `message_id` a tenant published, and the record that holds it. The key is taken
    for `IDEMPOTENCY_WINDOW` from `published_at`; a publish after that takes it over (in the
    same statement that inserts its record: `publishing.records`), and the storage job
    deletes keys older than the window. This table, small and unpartitioned, is what makes
    ids unique for 24 h: a unique index on the partitioned records would have to include
    the day, and could not see a duplicate across midnight.

    Its one index is the key: publishes look keys up by it, and a second index (on
    `published_at`, for the trim) would cost every publish an insert and tempt the planner
    away from the key, while the hourly trim reads the table once."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36), nullable=False)
    #: When the record was first published (the record's own `published_at` moves to its
    #: release time when a scheduled message is released; this one does not).
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

