"""Finding what a request names — a topic, a subscription — within the caller's tenant.

Another tenant's resources answer as if they did not exist; only a public topic may be named
across tenants, as `<tenant>/<topic>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.dependencies import Principal
from models import Subscription, Tenant, Topic
from mq.errors import SubscriptionNotFound, TopicNotFound

SUBSCRIPTION_ID = r"^[A-Za-z0-9-]{1,64}$"


def find_topic(session: Session, tenant_id: str, name: str) -> Topic:
    """The tenant's topic called `name`, or `TopicNotFound`."""
    topic = session.scalar(select(Topic).where(Topic.tenant_id == tenant_id, Topic.name == name))
    if topic is None:
        raise TopicNotFound(name)
    return topic


def resolve_topic(session: Session, caller: Principal, ref: str) -> Topic:
    """`name` in the caller's tenant, or `<tenant>/<name>` naming another tenant's public
    topic; anything else is `TopicNotFound`."""
    topic = lookup_topic(session, caller, ref)
    if topic is None:
        raise TopicNotFound(ref)
    return topic


def lookup_topic(session: Session, caller: Principal, ref: str) -> Topic | None:
    """What `resolve_topic` finds, or None."""
    owner, _, name = ref.rpartition("/")
    if not owner or owner == caller.tenant_name:
        try:
            return find_topic(session, caller.tenant_id, name)
        except TopicNotFound:
            return None
    return session.scalar(
        select(Topic).join(Tenant, Tenant.id == Topic.tenant_id)
        .where(Tenant.name == owner, Topic.name == name, Topic.is_public.is_(True))
    )


def topic_labels(session: Session, tenant_id: str, topic_ids: Iterable[str]) -> dict[str, str]:
    """How a tenant names each topic: its name, or `<owner>/<name>` for another tenant's."""
    ids = set(topic_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Topic.id, Topic.name, Topic.tenant_id, Tenant.name)
        .join(Tenant, Tenant.id == Topic.tenant_id).where(Topic.id.in_(ids))
    ).all()
    return {topic_id: name if owner_id == tenant_id else f"{owner}/{name}"
            for topic_id, name, owner_id, owner in rows}


def find_subscription(session: Session, caller: Principal, subscription_id: str) -> Subscription:
    """The caller's tenant's subscription, or `SubscriptionNotFound` (also for another
    tenant's id: it answers as if it did not exist)."""
    if not re.match(SUBSCRIPTION_ID, subscription_id):
        raise SubscriptionNotFound(subscription_id[:64])
    subscription = session.scalar(select(Subscription).where(
        Subscription.id == subscription_id, Subscription.tenant_id == caller.tenant_id))
    if subscription is None:
        raise SubscriptionNotFound(subscription_id)
    return subscription


def topic_of(session: Session, subscription: Subscription) -> Topic:
    """The subscription's topic (`SubscriptionNotFound` if both were deleted meanwhile)."""
    topic = session.get(Topic, subscription.topic_id)
    if topic is None:  # deleted with its subscriptions a moment ago
        raise SubscriptionNotFound(subscription.id)
    return topic


def label_of(session: Session, subscription: Subscription, topic: Topic) -> str:
    """How the subscription's tenant names its topic."""
    if topic.tenant_id == subscription.tenant_id:
        return topic.name
    return topic_labels(session, subscription.tenant_id, [topic.id])[topic.id]
