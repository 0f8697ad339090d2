"""Tenants (operator) and their API keys (tenant admins). A change that API processes cache
— quotas, a revoked key — invalidates the cache after its commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.cache import EpochCache
from models import ApiKey, Tenant
from models.tenancy import add_api_key
from mq.errors import NotFound


def find_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant '{tenant_id}' does not exist")
    return tenant


def set_quotas(session: Session, cache: EpochCache, tenant_id: str,
               quotas: dict[str, int]) -> Tenant:
    """Override some of the tenant's quotas (0 = unlimited)."""
    tenant = find_tenant(session, tenant_id)
    tenant.quotas = {**tenant.quotas, **quotas}
    session.commit()
    cache.invalidate()  # API processes cache quota overrides
    return tenant


def create_api_key(session: Session, tenant_id: str, name: str, role: str) -> dict[str, Any]:
    """A new key of the tenant, as answered: the key itself is shown this once."""
    row, key = add_api_key(session, tenant_id, name, role)
    session.commit()
    return {"id": row.id, "name": row.name, "role": row.role, "key_prefix": row.key_prefix,
            "created_at": row.created_at, "last_used_at": None, "key": key}


def api_keys_query(tenant_id: str) -> Select[ApiKey]:
    return select(ApiKey).where(ApiKey.tenant_id == tenant_id)


def revoke_api_key(session: Session, cache: EpochCache, tenant_id: str, key_id: str) -> None:
    """Delete the key: it answers 401 from the next request on, in every API process."""
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if row is None:
        raise NotFound(f"API key '{key_id}' does not exist")
    session.delete(row)
    session.commit()
    cache.invalidate()
