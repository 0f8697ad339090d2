"""Subscriptions: create, update, delete, pause and resume, seek, statistics and delivery
records.

A subscription's `consumer_group` is a Redis consumer group (named with `group_name`, so
tenants never share one) on every partition stream of its topic; it is created with the
subscription and removed with the last subscription of the group. Every change is announced
on the control stream so that workers apply it without a restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.dependencies import Principal, Scope, Services
from api.fields import NAME_PATTERN
from api.services.lookups import (
    find_subscription,
    label_of,
    lookup_topic,
    resolve_topic,
    topic_labels,
    topic_of,
)
from api.services.quotas import check_subscription_quota
from broker.control import Op, announce
from broker.dead_letters import DEAD_LETTER_SUFFIX
from broker.keys import group_name
from broker.outcomes import DeliveryOutcome
from handlers.registry import public_view, updated_secrets
from handlers.signing import generate_secret
from models import ConsumptionRecord, Subscription, Topic
from models.base import utcnow
from models.messages import CLOCK_SKEW
from mq.errors import (
    BackendNotSupported,
    Forbidden,
    SubscriptionAlreadyExists,
    TopicNotFound,
    ValidationError,
)
from mq.settings import Settings

#: What a create or update may set, besides `topic`.
SETTABLE = ("consumer_group", "consumer_name", "subscription_type", "offset_reset_policy",
            "max_poll_records", "session_timeout_ms", "heartbeat_interval_ms", "handler_config",
            "message_filter", "dead_letter_queue", "dead_letter_expired", "max_retry_attempts",
            "retry_delay_ms", "max_retry_delay_ms", "status")
#: What a subscription shows, besides `topic`.
SHOWN = ("id", *SETTABLE, "created_at", "updated_at", "last_consumed_at")
IMMUTABLE = ("topic", "consumer_group", "consumer_name")
DEFAULT_MAX_RETRY_DELAY_MS = 300_000
#: The stats' `*_total` fields, from the outcomes' counters.
COUNTERS = {f"{outcome.counter}_total": outcome.counter for outcome in DeliveryOutcome
            if outcome.counter}


def create_subscription(here: Scope, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """Subscribe to a topic: the row, and the consumer group on every partition."""
    refuse_kafka(body)
    session, svc = here.session, here.services
    topic = resolve_topic(session, caller, body["topic"])
    check_consumer(topic, caller)
    values = _with_defaults(body, topic)
    values["handler_config"], generated = generate_secret(values["handler_config"])
    _check_rules(values, topic, caller.tenant_id)
    check_subscription_quota(here, caller.tenant_id)
    subscription = Subscription(tenant_id=caller.tenant_id, topic_id=topic.id, **values)
    session.add(subscription)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        if session.get(Topic, topic.id) is None:  # deleted meanwhile
            raise TopicNotFound(body["topic"]) from None
        raise SubscriptionAlreadyExists(
            f"topic '{body['topic']}' already has consumer '{values['consumer_name']}'"
            f" in group '{values['consumer_group']}'") from None
    # Group first, commit second: when Redis fails, the row is rolled back with it.
    svc.streams.create_group(
        topic.id, topic.partition_count,
        group_name(caller.tenant_id, subscription.consumer_group),
        from_start=subscription.offset_reset_policy == "earliest",
    )
    session.commit()
    _announce(svc, subscription, "upsert")
    return _answered(subscription_view(subscription, label_of(session, subscription, topic)),
                     generated)


def subscriptions_query(session: Session, caller: Principal,
                        args: dict[str, Any]) -> Select[Any] | None:
    """The caller's subscriptions filtered by `topic` and `status` (None: the topic named
    does not exist, so none)."""
    stmt = select(Subscription).where(Subscription.tenant_id == caller.tenant_id)
    if "topic" in args:
        topic = lookup_topic(session, caller, args["topic"])
        if topic is None:
            return None
        stmt = stmt.where(Subscription.topic_id == topic.id)
    if "status" in args:
        stmt = stmt.where(Subscription.status == args["status"])
    return stmt


def subscription_views(session: Session, tenant_id: str,
                       rows: Sequence[Subscription]) -> list[dict[str, Any]]:
    labels = topic_labels(session, tenant_id, (row.topic_id for row in rows))
    return [subscription_view(row, labels[row.topic_id]) for row in rows]


def subscription_with_stats(session: Session, svc: Services, caller: Principal,
                            subscription_id: str) -> dict[str, Any]:
    """A subscription with its lag, pending deliveries and delivery counters."""
    subscription = find_subscription(session, caller, subscription_id)
    topic = topic_of(session, subscription)
    view = subscription_view(subscription, label_of(session, subscription, topic))
    return {**view, "stats": _stats(svc, subscription, topic)}


def update_subscription(here: Scope, caller: Principal, subscription_id: str,
                        body: dict[str, Any], raw_handler_config: Any) -> dict[str, Any]:
    """Apply a partial update; `raw_handler_config` is the one sent, before validation (its
    secrets left out are kept)."""
    session, svc = here.session, here.services
    subscription = find_subscription(session, caller, subscription_id)
    topic = topic_of(session, subscription)
    label = label_of(session, subscription, topic)
    _check_immutable(subscription, label, body)
    refuse_kafka(body)
    changes = {k: v for k, v in body.items() if k not in IMMUTABLE}
    generated = None
    if "handler_config" in changes:
        changes["handler_config"], generated = updated_secrets(
            raw_handler_config or {}, changes["handler_config"], subscription.handler_config,
            now=time.time(), overlap_s=svc.settings.mq_webhook_secret_overlap_s)
    current = {name: getattr(subscription, name) for name in SETTABLE}
    _check_rules({**current, **changes}, topic, caller.tenant_id)
    for name, value in changes.items():
        setattr(subscription, name, value)
    session.commit()
    _announce(svc, subscription, "upsert")
    return _answered(subscription_view(subscription, label), generated)


def delete_subscription(session: Session, svc: Services, caller: Principal,
                        subscription_id: str) -> None:
    """Delete a subscription; its group goes with the last subscription sharing it."""
    subscription = find_subscription(session, caller, subscription_id)
    topic = topic_of(session, subscription)
    session.delete(subscription)
    session.commit()
    # Counted after the commit: of two concurrent deletes of a group's last two
    # subscriptions, the later one sees none left and removes the group.
    if _group_members(session, subscription) == 0:
        svc.streams.destroy_group(
            topic.id, topic.partition_count,
            group_name(subscription.tenant_id, subscription.consumer_group))
    remove_subscription_keys(svc, [subscription.id])
    _announce(svc, subscription, "delete")


def set_status(session: Session, svc: Services, caller: Principal, subscription_id: str,
               status: str) -> dict[str, Any]:
    """Pause or resume; workers apply it within 2 s."""
    subscription = find_subscription(session, caller, subscription_id)
    topic = topic_of(session, subscription)
    subscription.status = status
    session.commit()
    _announce(svc, subscription, "upsert")
    return subscription_view(subscription, label_of(session, subscription, topic))


def seek(session: Session, svc: Services, caller: Principal, subscription_id: str,
         body: dict[str, Any]) -> dict[str, Any]:
    """Move the group to the earliest or latest entry, to an offset (the next delivery is
    the entry at it) or to a time (on every partition)."""
    subscription = find_subscription(session, caller, subscription_id)
    topic = topic_of(session, subscription)
    group = group_name(subscription.tenant_id, subscription.consumer_group)
    for partition, start in _seek_targets(topic, body):
        try:
            svc.streams.seek_group(topic.id, partition, group, start,
                                   past_end_ok="offset" not in body)
        except ValueError as exc:
            raise ValidationError("the offset is past the end of the partition",
                                  {"offset": [str(exc)]}) from None
    _announce(svc, subscription, "upsert")
    return subscription_view(subscription, label_of(session, subscription, topic))


def deliveries_query(subscription: Subscription, args: dict[str, Any], settings: Settings,
                     now: datetime | None = None) -> Select[Any]:
    """The subscription's delivery attempts (consumption records) within their retention,
    filtered by `status`. Ordered newest first (`api.pagination`), PostgreSQL reads the
    days' partitions newest first on `ix_consumption_records_subscription_consumed` and
    stops once the page is full."""
    now = now or utcnow()
    kept = timedelta(days=settings.mq_delivery_record_retention_days)
    stmt = select(ConsumptionRecord).where(ConsumptionRecord.subscription_id == subscription.id,
                                           ConsumptionRecord.consumed_at > now - kept,
                                           ConsumptionRecord.consumed_at <= now + CLOCK_SKEW)
    if "status" in args:
        stmt = stmt.where(ConsumptionRecord.status == args["status"])
    return stmt


def delivery_view(record: ConsumptionRecord) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "status": record.status,
        "attempt": record.retry_count + 1,
        "processing_time_ms": record.processing_time_ms,
        "error_message": record.error_message,
        "response_status": record.response_status,
        "consumed_at": record.consumed_at,
    }


def check_consumer(topic: Topic, caller: Principal) -> None:
    """Consumer keys must be on the topic's `allowed_consumers` when it is not empty."""
    if caller.is_admin or not topic.allowed_consumers:
        return
    if caller.key_name not in topic.allowed_consumers:
        raise Forbidden(f"key '{caller.key_name}' may not subscribe to topic '{topic.name}'")


def remove_subscription_keys(svc: Services, subscription_ids: Iterable[str]) -> None:
    """Delete the Redis keys that belong to subscriptions: counters and dead letters."""
    names = [name for sid in subscription_ids
             for name in (svc.keys.subscription_counters(sid), svc.keys.dead_letters(sid))]
    for start in range(0, len(names), 500):
        svc.redis.delete(*names[start:start + 500])


def subscription_view(subscription: Subscription, label: str) -> dict[str, Any]:
    """The subscription object as answered (secrets hidden)."""
    view = {name: getattr(subscription, name) for name in SHOWN}
    view["topic"] = label
    view["handler_config"] = public_view(subscription.handler_config or {})
    return view


def _answered(view: dict[str, Any], generated_secret: str | None) -> dict[str, Any]:
    """A create's or update's answer: a secret made by `"secret": "generate"` is shown
    in this answer only."""
    if generated_secret is not None:
        view["handler_config"] = {**view["handler_config"], "secret": generated_secret}
    return view


def refuse_kafka(body: dict[str, Any]) -> None:
    if body.get("subscription_type") == "kafka_consumer":
        raise BackendNotSupported(
            "the kafka backend is not available in this edition",
            {"subscription_type": ["kafka_consumer is not available"]})


# --- helpers -------------------------------------------------------------------------------


def _stats(svc: Services, subscription: Subscription, topic: Topic) -> dict[str, int]:
    """Lag and pending of the subscription's group (summed over partitions) and its
    delivery counters (kept by the workers; absent = 0)."""
    group = group_name(subscription.tenant_id, subscription.consumer_group)
    partitions = svc.streams.partition_stats(topic.id, topic.partition_count)
    mine = [g for p in partitions for g in p.groups if g.name == group]
    counters = svc.redis.hgetall(svc.keys.subscription_counters(subscription.id))
    stats = {"lag": sum(g.lag for g in mine), "pending": sum(g.pending for g in mine)}
    for name, field_name in COUNTERS.items():
        stats[name] = _int(counters.get(field_name))
    return stats


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _with_defaults(body: dict[str, Any], topic: Topic) -> dict[str, Any]:
    """The create body with every default of the contract filled in."""
    values = {k: v for k, v in body.items() if k != "topic"}
    handler_type = values["handler_config"]["type"]
    values.setdefault("consumer_name", values["consumer_group"])
    values.setdefault("subscription_type",
                      "webhook" if handler_type == "http" else "redis_consumer")
    values.setdefault("dead_letter_queue", topic.name + DEAD_LETTER_SUFFIX)
    values.setdefault("message_filter", None)
    retry_delay = values.get("retry_delay_ms", 1_000)
    # A long first delay lifts the default cap rather than contradicting it.
    values.setdefault("max_retry_delay_ms", max(DEFAULT_MAX_RETRY_DELAY_MS, retry_delay))
    return values


def _check_rules(values: dict[str, Any], topic: Topic, tenant_id: str) -> None:
    """Rules across fields, checked on the values a create or update would store."""
    problems: dict[str, list[str]] = {}
    handler_type = values["handler_config"]["type"]
    if values.get("subscription_type") == "webhook" and handler_type != "http":
        problems["subscription_type"] = ["a webhook subscription needs an 'http' handler"]
    retry_delay = values.get("retry_delay_ms", 1_000)
    max_delay = values.get("max_retry_delay_ms", DEFAULT_MAX_RETRY_DELAY_MS)
    if max_delay < retry_delay:
        problems["max_retry_delay_ms"] = [f"must be at least retry_delay_ms ({retry_delay})"]
    dead_letter_queue = values.get("dead_letter_queue")
    if dead_letter_queue is not None and not re.match(NAME_PATTERN, dead_letter_queue):
        problems["dead_letter_queue"] = [
            f"the default '{dead_letter_queue[:60]}…' is longer than 200 characters; name one"]
    elif dead_letter_queue == topic.name and topic.tenant_id == tenant_id:
        problems["dead_letter_queue"] = ["must not be the subscribed topic itself"]
    if problems:
        raise ValidationError("the subscription is invalid", problems)


def _check_immutable(subscription: Subscription, label: str, body: dict[str, Any]) -> None:
    current = {"topic": label, "consumer_group": subscription.consumer_group,
               "consumer_name": subscription.consumer_name}
    problems = {name: ["cannot be changed"] for name in IMMUTABLE
                if name in body and body[name] != current[name]}
    if problems:
        raise ValidationError("immutable fields cannot change", problems)


def _group_members(session: Session, subscription: Subscription) -> int:
    return session.scalar(
        select(func.count()).select_from(Subscription).where(
            Subscription.topic_id == subscription.topic_id,
            Subscription.tenant_id == subscription.tenant_id,
            Subscription.consumer_group == subscription.consumer_group)
    ) or 0


def _announce(svc: Services, subscription: Subscription, op: Op) -> None:
    announce(svc.redis, svc.keys, "subscription", subscription.id, op)


def _seek_targets(topic: Topic, body: dict[str, Any]) -> list[tuple[int, str | None]]:
    """`(partition, first entry id to deliver)` pairs; `None` = the end."""
    everywhere = range(topic.partition_count)
    if body.get("to") == "earliest":
        return [(p, "0-0") for p in everywhere]
    if body.get("to") == "latest":
        return [(p, None) for p in everywhere]
    if "timestamp" in body:
        moment: datetime = body["timestamp"]
        millis = max(0, int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000))
        return [(p, f"{millis}-0") for p in everywhere]
    return [(_seek_partition(topic, body), body["offset"])]


def _seek_partition(topic: Topic, body: dict[str, Any]) -> int:
    partition = body.get("partition")
    if partition is None:
        if topic.partition_count > 1:
            raise ValidationError("the topic has several partitions", {"partition": [
                f"required: the topic has {topic.partition_count} partitions"]})
        return 0
    if partition >= topic.partition_count:
        raise ValidationError("no such partition", {"partition": [
            f"the topic has partitions 0-{topic.partition_count - 1}"]})
    return partition
