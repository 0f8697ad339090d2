"""Tenant quotas: the settings' defaults overridden per tenant by `PUT /tenants/{id}`.

`0` means unlimited. Counting quotas (`topics`, `subscriptions`) are checked against the
tenant's current count before a create; `stored_bytes` against the Redis memory of the
tenant's streams before a publish; `publish_rate` (messages per second, across all API
processes) is counted in one Redis key per tenant and second. A tenant without limits costs
nothing: its overrides come from the process cache, and no counter is touched.
"""

from __future__ import annotations

import dataclasses
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.dependencies import Scope
from models import Subscription, Tenant, Topic
from mq.errors import QuotaExceeded
from mq.settings import Quotas

#: How long a client should wait after hitting a counting quota (it only frees up when the
#: tenant deletes something, so a minute is a hint, not a promise).
COUNT_RETRY_AFTER_S = 60


def tenant_quotas(here: Scope, tenant_id: str) -> Quotas:
    """The tenant's effective quotas."""
    svc = here.services
    overrides = svc.cache.get_or_load("quotas", tenant_id, here.cache_epoch(),
                                      lambda: _overrides(here.session, tenant_id))
    return dataclasses.replace(svc.settings.default_quotas, **(overrides or {}))


def _overrides(session: Session, tenant_id: str) -> dict[str, int]:
    stored = session.scalar(select(Tenant.quotas).where(Tenant.id == tenant_id))
    known = {f.name for f in dataclasses.fields(Quotas)}
    return {k: v for k, v in (stored or {}).items() if k in known}


def check_count(kind: str, limit: int, used: int) -> None:
    """Refuse creating one more `kind` when `used` already reaches a non-zero `limit`."""
    if limit and used >= limit:
        raise QuotaExceeded(f"the tenant's {kind} quota ({limit}) is used up",
                            {kind: [f"at most {limit}"]},
                            headers={"Retry-After": str(COUNT_RETRY_AFTER_S)})


def check_topic_quota(here: Scope, tenant_id: str) -> None:
    """Refuse one more topic when the tenant's `topics` quota is used up."""
    limit = tenant_quotas(here, tenant_id).topics
    if limit:
        used = here.session.scalar(
            select(func.count()).select_from(Topic).where(Topic.tenant_id == tenant_id))
        check_count("topics", limit, used or 0)


def check_subscription_quota(here: Scope, tenant_id: str) -> None:
    """Refuse one more subscription when the tenant's `subscriptions` quota is used up."""
    limit = tenant_quotas(here, tenant_id).subscriptions
    if limit:
        used = here.session.scalar(
            select(func.count()).select_from(Subscription)
            .where(Subscription.tenant_id == tenant_id))
        check_count("subscriptions", limit, used or 0)


def take_publish_rate(here: Scope, tenant_id: str, messages: int) -> None:
    """Count `messages` against the tenant's publish rate of the current second, or refuse;
    once per request."""
    limit = tenant_quotas(here, tenant_id).publish_rate
    if not limit or here.publish_rate_taken:
        return
    svc = here.services
    key = svc.keys.publish_rate(tenant_id, int(time.time()))
    pipe = svc.redis.pipeline(transaction=False)
    pipe.incrby(key, messages)
    pipe.expire(key, 2)
    total, _ = pipe.execute()
    if total > limit:
        svc.redis.decrby(key, messages)  # refused messages do not use up the second
        raise QuotaExceeded(f"the tenant's publish rate quota ({limit} messages/s) is reached",
                            {"publish_rate": [f"at most {limit} messages per second"]},
                            headers={"Retry-After": "1"})
    here.publish_rate_taken = True


def check_stored_bytes(here: Scope, tenant_id: str) -> None:
    """Refuse publishing while the tenant's streams hold `stored_bytes` or more (Redis memory
    of its partition streams; only measured for tenants that have this quota)."""
    limit = tenant_quotas(here, tenant_id).stored_bytes
    if not limit:
        return
    svc = here.services
    topics = here.session.execute(
        select(Topic.id, Topic.partition_count).where(Topic.tenant_id == tenant_id)).all()
    pipe = svc.redis.pipeline(transaction=False)
    for topic_id, partition_count in topics:
        for key in svc.keys.streams(topic_id, partition_count):
            pipe.memory_usage(key)
    used = sum(size or 0 for size in pipe.execute())
    if used >= limit:
        raise QuotaExceeded(f"the tenant's stored_bytes quota ({limit}) is used up",
                            {"stored_bytes": [f"at most {limit}"]},
                            headers={"Retry-After": str(COUNT_RETRY_AFTER_S)})
