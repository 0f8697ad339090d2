"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from models.base import Base, IdMixin, JSONType, TimestampsMixin, UTCDateTime, utcnow
from mq.errors import Conflict


class Tenant(IdMixin, TimestampsMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    #: Overrides of the settings' default quotas, e.g. {"topics": 10}.
    quotas: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict, nullable=False)


class ApiKey(IdMixin, Base):
    """A tenant's API key. Only the SHA-256 of the key is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    #: The first characters of the key, shown in listings so a key can be recognised.
    key_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tenant: Mapped[Tenant] = relationship(lazy="joined")


Index("ix_api_keys_key_hash", ApiKey.key_hash, unique=True)


KEY_PREFIX = "mq_"


def generate_key() -> str:
    """A new API key: a recognisable prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 of a key. Keys carry 256 random bits, so a fast unsalted hash is enough."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def add_api_key(session: Session, tenant_id: str, name: str, role: str) -> tuple[ApiKey, str]:
    """Add a key to a tenant (flushed, not committed); returns the row and the key itself.

    A name already taken rolls the session back and raises `Conflict`.
    """
    key = generate_key()
    row = ApiKey(tenant_id=tenant_id, name=name, role=role, key_hash=hash_key(key),
                 key_prefix=key[:10])
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"an API key named '{name}' already exists") from None
    return row, key


def create_tenant(session: Session, name: str) -> tuple[Tenant, str]:
    """Create a tenant with its `admin` key and commit; returns the tenant and the key."""
    tenant = Tenant(name=name, quotas={})
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"tenant '{name}' already exists") from None
    _, key = add_api_key(session, tenant.id, "admin", "admin")
    session.commit()
    return tenant, key


def ensure_admin_key(session: Session, tenant_name: str, saved_key: str | None) -> str:
    """An admin key of the tenant named `tenant_name`, committed: `saved_key` if it still
    opens the tenant, else a new one (the tenant is created if missing; otherwise its `admin`
    key is replaced, as keys are stored hashed and the saved copy was the only one)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        return create_tenant(session, tenant_name)[1]
    if saved_key and session.scalar(select(ApiKey.id).where(
            ApiKey.tenant_id == tenant.id, ApiKey.key_hash == hash_key(saved_key))):
        return saved_key
    session.execute(delete(ApiKey).where(ApiKey.tenant_id == tenant.id, ApiKey.name == "admin"))
    _, key = add_api_key(session, tenant.id, "admin", "admin")
    session.commit()
    return key
