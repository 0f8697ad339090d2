"""Topics (queues) and their subscriptions: the seed's `message_topics` and
`message_subscriptions`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, JSONType, TimestampsMixin, UTCDateTime


class Topic(IdMixin, TimestampsMixin, Base):
    __tablename__ = "message_topics"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    display_name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)

    topic_type: Mapped[str] = mapped_column(String(50), default="redis_stream", nullable=False)
    partition_count: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    replication_factor: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    retention_ms: Mapped[int] = mapped_column(BigInteger, default=604_800_000, nullable=False)
    max_message_bytes: Mapped[int] = mapped_column(Integer, default=1_048_576, nullable=False)

    message_format: Mapped[str] = mapped_column(String(50), default="json", nullable=False)
    schema_subject: Mapped[str | None] = mapped_column(String(255))
    schema_definition: Mapped[Any] = mapped_column(JSONType, nullable=True)
    compression_type: Mapped[str] = mapped_column(String(20), default="none", nullable=False)
    encryption: Mapped[str] = mapped_column(String(20), default="none", nullable=False)

    is_public: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    allowed_producers: Mapped[list[str]] = mapped_column(JSONType, default=list, nullable=False)
    allowed_consumers: Mapped[list[str]] = mapped_column(JSONType, default=list, nullable=False)

    status: Mapped[str] = mapped_column(String(20), default="active", nullable=False)


class Subscription(IdMixin, TimestampsMixin, Base):
    __tablename__ = "message_subscriptions"
    # Unique per subscribing tenant: tenants share public topics, never group names.
    __table_args__ = (UniqueConstraint("tenant_id", "topic_id", "consumer_group",
                                       "consumer_name",
                                       name="uq_message_subscriptions_tenant_topic_group_name"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    topic_id: Mapped[str] = mapped_column(
        ForeignKey("message_topics.id", ondelete="CASCADE"), nullable=False
    )
    consumer_group: Mapped[str] = mapped_column(String(200), nullable=False)
    consumer_name: Mapped[str] = mapped_column(String(200), nullable=False)
    subscription_type: Mapped[str] = mapped_column(String(50), nullable=False)

    offset_reset_policy: Mapped[str] = mapped_column(String(20), default="latest", nullable=False)
    max_poll_records: Mapped[int] = mapped_column(Integer, default=500, nullable=False)
    session_timeout_ms: Mapped[int] = mapped_column(Integer, default=30_000, nullable=False)
    heartbeat_interval_ms: Mapped[int] = mapped_column(Integer, default=3_000, nullable=False)

    handler_config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    dead_letter_queue: Mapped[str | None] = mapped_column(String(200))
    dead_letter_expired: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    max_retry_attempts: Mapped[int] = mapped_column(Integer, default=3, nullable=False)
    retry_delay_ms: Mapped[int] = mapped_column(Integer, default=1_000, nullable=False)
    max_retry_delay_ms: Mapped[int] = mapped_column(Integer, default=300_000, nullable=False)

    message_filter: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20), default="active", nullable=False)
    last_consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


Index("ix_message_subscriptions_tenant_created", Subscription.tenant_id, Subscription.created_at)
