"""Registered schemas (the schema registry, with its lookups) and recurring schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

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


def latest_schema(session: Session, tenant_id: str, subject: str) -> Schema | None:
    return session.scalar(select(Schema).where(Schema.tenant_id == tenant_id,
                                               Schema.subject == subject)
                          .order_by(Schema.version.desc()).limit(1))


def find_schema(session: Session, tenant_id: str, subject: str,
                version: int | None) -> Schema | None:
    """A version of the tenant's `subject` (the latest when `version` is None), or None."""
    if version is None:
        return latest_schema(session, tenant_id, subject)
    return session.scalar(select(Schema).where(
        Schema.tenant_id == tenant_id, Schema.subject == subject, Schema.version == version))


def parse_subject_reference(reference: str) -> tuple[str, int | None] | None:
    """`"subject"` → (subject, None); `"subject:3"` → (subject, 3); anything else → None."""
    subject, _, version = reference.partition(":")
    if not subject or len(subject) > 255 or not all(c.isalnum() or c in "._-" for c in subject):
        return None
    if not _:
        return subject, None
    number = version_number(version)
    return (subject, number) if number is not None else None


def referenced_schema(session: Session, tenant_id: str, reference: str | None) -> Schema | None:
    """The version a topic's `schema_subject` (`"subject"` or `"subject:3"`) names, or None."""
    parsed = parse_subject_reference(reference) if reference else None
    return find_schema(session, tenant_id, *parsed) if parsed is not None else None


def version_number(text: str) -> int | None:
    """A schema version as written in a path or reference (1 and up), or None."""
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        return None
    return int(text)


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
