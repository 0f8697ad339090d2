"""Topics (queues): create, update, delete with everything that hangs off them, statistics.

Redis changes come before the commit where a Redis failure must leave the database as it
was, and changes that workers or other API processes cache are announced after it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.dependencies import Scope, Services
from api.services.formats import CODEC_FIELDS, check_codec
from api.services.quotas import check_topic_quota
from api.services.registry import check_subject_reference
from api.services.subscriptions import remove_subscription_keys
from broker.control import announce
from broker.keys import group_name
from broker.streams import TopicStreams
from models import Schedule, Subscription, Topic
from mq.errors import BackendNotSupported, TopicAlreadyExists, ValidationError

IMMUTABLE = ("name", "topic_type")


def create_topic(here: Scope, tenant_id: str, body: dict[str, Any]) -> Topic:
    if body.get("topic_type") == "kafka":
        raise BackendNotSupported("the kafka backend is not available in this edition",
                                  {"topic_type": ["kafka is not available"]})
    session = here.session
    check_topic_quota(here, tenant_id)
    # The contract's example: "orders" is displayed as "Orders" unless told otherwise.
    body.setdefault("display_name", body["name"][:1].upper() + body["name"][1:])
    check_codec(session, here.services.settings, tenant_id, body)
    if body.get("schema_subject"):
        check_subject_reference(session, tenant_id, body["schema_subject"])
    topic = Topic(tenant_id=tenant_id, **body)
    session.add(topic)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise TopicAlreadyExists(body["name"]) from None
    return topic


def topics_query(tenant_id: str, status: str | None) -> Select[Any]:
    """The tenant's topics, of one status if given."""
    stmt = select(Topic).where(Topic.tenant_id == tenant_id)
    return stmt if status is None else stmt.where(Topic.status == status)


def update_topic(session: Session, svc: Services, topic: Topic, body: dict[str, Any]) -> Topic:
    """Apply a partial update. `name` and `topic_type` are immutable; partitions only grow."""
    _check_update(topic, body)
    check_codec(session, svc.settings, topic.tenant_id,
                {**{f: getattr(topic, f) for f in CODEC_FIELDS}, **body})
    if body.get("schema_subject"):
        check_subject_reference(session, topic.tenant_id, body["schema_subject"])
    old_partitions = topic.partition_count
    for field_name, value in body.items():
        setattr(topic, field_name, value)
    if topic.partition_count > old_partitions:
        # Groups first: a Redis failure then answers 503 with nothing changed.
        _extend_groups(session, svc.streams, topic)
    session.commit()
    svc.cache.invalidate()
    announce(svc.redis, svc.keys, "topic", topic.id, "upsert")
    return topic


def delete_topic(session: Session, svc: Services, topic: Topic) -> None:
    """Delete a topic with its streams, subscriptions, schedules and stored messages."""
    subscription_ids = session.scalars(
        select(Subscription.id).where(Subscription.topic_id == topic.id)).all()
    for table in (Schedule, Subscription):
        session.execute(delete(table).where(table.topic_id == topic.id))
    session.delete(topic)
    # Streams go before the commit: if Redis fails, the 503 leaves the queue whole for a
    # retry instead of a deleted queue whose streams nobody would ever remove.
    session.flush()
    svc.streams.delete(topic.id, topic.partition_count)
    session.commit()
    svc.cache.invalidate()
    remove_subscription_keys(svc, subscription_ids)
    announce(svc.redis, svc.keys, "topic", topic.id, "delete")


def topic_stats(session: Session, streams: TopicStreams, topic: Topic) -> dict[str, Any]:
    """Stored length, offsets, pending and lag over the topic's partitions."""
    partitions = streams.partition_stats(topic.id, topic.partition_count)
    subscriptions = session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.topic_id == topic.id)
    )
    first = partitions[0]
    return {
        "length": sum(p.length for p in partitions),
        "first_offset": first.first_offset,
        "last_offset": first.last_offset,
        "subscriptions": subscriptions or 0,
        "pending": sum(g.pending for p in partitions for g in p.groups),
        "lag": sum(g.lag for p in partitions for g in p.groups),
        "published_total": sum(p.entries_added for p in partitions),
        "partitions": [
            {"partition": p.partition, "length": p.length, "first_offset": p.first_offset,
             "last_offset": p.last_offset}
            for p in partitions
        ],
    }


def _check_update(topic: Topic, body: dict[str, Any]) -> None:
    problems: dict[str, list[str]] = {}
    for field_name in IMMUTABLE:
        if field_name in body and body[field_name] != getattr(topic, field_name):
            problems[field_name] = ["cannot be changed"]
    if body.get("partition_count", topic.partition_count) < topic.partition_count:
        problems["partition_count"] = [f"may only grow (now {topic.partition_count})"]
    if problems:
        raise ValidationError("immutable fields cannot change", problems)


def _extend_groups(session: Session, streams: TopicStreams, topic: Topic) -> None:
    """Give every subscription group of the topic a group on the new partitions."""
    groups = session.execute(
        select(Subscription.tenant_id, Subscription.consumer_group)
        .where(Subscription.topic_id == topic.id)
        .distinct()
    ).all()
    for tenant_id, consumer_group in groups:
        streams.create_group(topic.id, topic.partition_count,
                             group_name(tenant_id, consumer_group), from_start=True)
