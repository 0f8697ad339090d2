"""Message records and consumption records: the seed's `message_records` and
`consumption_records`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, JSONType, UTCDateTime, utcnow


class MessageRecord(IdMixin, Base):
    """One published message. `offset_value` is the Redis stream entry id once handed over."""

    __tablename__ = "message_records"
    __table_args__ = (UniqueConstraint("tenant_id", "message_id"),)

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


class ConsumptionRecord(IdMixin, Base):
    """One delivery attempt of one message to one subscription."""

    __tablename__ = "consumption_records"

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


Index(
    "ix_consumption_records_subscription_consumed",
    ConsumptionRecord.subscription_id,
    ConsumptionRecord.consumed_at,
)
Index("ix_consumption_records_message", ConsumptionRecord.tenant_id, ConsumptionRecord.message_id)
