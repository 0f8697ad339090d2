"""Registered schemas (the schema registry) and recurring schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, JSONType, TimestampsMixin, UTCDateTime, utcnow


class Schema(IdMixin, Base):
    """One version of a subject in a tenant's schema registry."""

    __tablename__ = "schemas"
    __table_args__ = (UniqueConstraint("tenant_id", "subject", "version"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    format: Mapped[str] = mapped_column(String(20), nullable=False)
    definition: Mapped[Any] = mapped_column(JSONType, nullable=False)
    compatibility: Mapped[str] = mapped_column(String(20), default="BACKWARD", nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Schedule(IdMixin, TimestampsMixin, Base):
    """A recurring publish: `message` is published to the topic on every `cron` run."""

    __tablename__ = "schedules"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    topic_id: Mapped[str] = mapped_column(
        ForeignKey("message_topics.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str | None] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(120), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", nullable=False)
    message: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


Index("ix_schedules_tenant_created", Schedule.tenant_id, Schedule.created_at)
