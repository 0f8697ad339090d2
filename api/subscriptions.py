"""Subscriptions: create, list, read with live statistics, update, delete, pause, resume,
seek, and the delivery records.

A subscription's `consumer_group` is a Redis consumer group (named with `group_name`, so
tenants never share one) on every partition stream of its topic; the API creates it with
the subscription and removes it with the last subscription of the group. Every change is
announced on the control stream so that workers apply it without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields, post_dump, validate, validates_schema
from marshmallow import ValidationError as InvalidFields
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import Principal, principal, tenant_access
from api.fields import NAME_PATTERN, Timestamp, name_field, strict_int
from api.handler_configs import (
    MessageFilter,
    keep_secrets,
    public_view,
    validate_handler_config,
)
from api.pagination import PageArgs, paginate
from api.parsing import Blueprint
from api.queues import find_topic
from api.quotas import check_subscription_quota
from api.services import services
from broker.control import Op, announce
from broker.dead_letters import DEAD_LETTER_SUFFIX
from broker.keys import group_name
from broker.streams import parse_entry_id
from models import ConsumptionRecord, Subscription, Tenant, Topic
from mq.errors import (
    BackendNotSupported,
    Forbidden,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    TopicNotFound,
    ValidationError,
)

PREFIX = "/subscriptions"
blp = Blueprint("subscriptions", __name__, description="Subscriptions")

ROLES = ("admin", "consumer")
TYPES = ("webhook", "redis_consumer", "kafka_consumer")
POLICIES = ("latest", "earliest")
STATUSES = ("active", "paused")
DELIVERY_STATUSES = ("success", "failed", "dead_letter", "expired", "filtered")
IMMUTABLE = ("topic", "consumer_group", "consumer_name")
TOPIC_REF = r"^(?:[a-z0-9][a-z0-9-]{0,62}/)?[A-Za-z0-9._-]{1,200}$"
SUBSCRIPTION_ID = r"^[A-Za-z0-9-]{1,64}$"
MAX_DELAY_MS = 86_400_000
DEFAULT_MAX_RETRY_DELAY_MS = 300_000
SECURITY = [{"bearer": []}]

COUNTERS = {"delivered_total": "delivered", "failed_total": "failed",
            "filtered_total": "filtered", "dead_lettered_total": "dead_lettered"}


class HandlerConfig(fields.Dict):
    """`handler_config`, checked by the validator registered for its `type`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return validate_handler_config(value, services().settings)


class SubscriptionFields(Schema):
    """Every settable field, with the contract's bounds; defaults are applied on create."""

    topic = fields.String(required=True, validate=validate.Regexp(
        TOPIC_REF, error="a topic name, or '<tenant>/<topic>' for another tenant's public topic"))
    consumer_group = name_field(required=True)
    consumer_name = name_field()
    subscription_type = fields.String(validate=validate.OneOf(TYPES))
    offset_reset_policy = fields.String(validate=validate.OneOf(POLICIES))
    max_poll_records = strict_int(1, 10_000)
    session_timeout_ms = strict_int(1_000, 43_200_000)
    heartbeat_interval_ms = strict_int(1, 43_200_000)
    handler_config = HandlerConfig(required=True)
    message_filter = MessageFilter(allow_none=True)
    dead_letter_queue = name_field()
    dead_letter_expired = fields.Boolean()
    max_retry_attempts = strict_int(0, 100)
    retry_delay_ms = strict_int(0, MAX_DELAY_MS)
    max_retry_delay_ms = strict_int(0, MAX_DELAY_MS)
    status = fields.String(validate=validate.OneOf(STATUSES))


class SubscriptionUpdate(SubscriptionFields):
    """`PUT` is partial; `topic`, `consumer_group`, `consumer_name` may only be re-sent as
    they are."""

    topic = fields.String(validate=validate.Length(max=300))
    consumer_group = fields.String(validate=validate.Length(max=300))
    consumer_name = fields.String(validate=validate.Length(max=300))
    handler_config = HandlerConfig()


class SubscriptionOut(Schema):
    id = fields.String()
    topic = fields.String()
    consumer_group = fields.String()
    consumer_name = fields.String()
    subscription_type = fields.String()
    offset_reset_policy = fields.String()
    max_poll_records = fields.Integer()
    session_timeout_ms = fields.Integer()
    heartbeat_interval_ms = fields.Integer()
    handler_config = fields.Dict()
    message_filter = fields.Dict(allow_none=True)
    dead_letter_queue = fields.String()
    dead_letter_expired = fields.Boolean()
    max_retry_attempts = fields.Integer()
    retry_delay_ms = fields.Integer()
    max_retry_delay_ms = fields.Integer()
    status = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()
    last_consumed_at = Timestamp(allow_none=True)


class SubscriptionStatsOut(Schema):
    lag = fields.Integer()
    pending = fields.Integer()
    delivered_total = fields.Integer()
    failed_total = fields.Integer()
    filtered_total = fields.Integer()
    dead_lettered_total = fields.Integer()


class SubscriptionWithStats(SubscriptionOut):
    stats = fields.Nested(SubscriptionStatsOut)


class SubscriptionPage(Schema):
    items = fields.List(fields.Nested(SubscriptionOut))
    next_cursor = fields.String(allow_none=True)


class SubscriptionListArgs(PageArgs):
    topic = fields.String(validate=validate.Length(max=300))
    status = fields.String(validate=validate.OneOf(STATUSES))


class SeekBody(Schema):
    """Exactly one of `to`, `offset` (with `partition`) or `timestamp`."""

    to = fields.String(validate=validate.OneOf(("earliest", "latest")))
    offset = fields.String(validate=validate.Length(1, 64))
    partition = strict_int(0, 63)
    timestamp = Timestamp()

    @validates_schema
    def check_target(self, data: dict[str, Any], **_: Any) -> None:
        given = [name for name in ("to", "offset", "timestamp") if name in data]
        if len(given) != 1:
            raise InvalidFields("give exactly one of 'to', 'offset' or 'timestamp'", "_schema")
        if "partition" in data and "offset" not in data:
            raise InvalidFields("only an 'offset' names a partition", "partition")
        if "offset" in data:
            try:
                parse_entry_id(data["offset"])
            except ValueError:
                raise InvalidFields("not a stream offset such as '1732725848123-0'",
                                    "offset") from None


class DeliveryArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliveryAttemptOut(Schema):
    message_id = fields.String()
    status = fields.String()
    attempt = fields.Integer()
    processing_time_ms = fields.Integer(allow_none=True)
    error_message = fields.String(allow_none=True)
    response_status = fields.Integer(allow_none=True)
    consumed_at = Timestamp()

    @post_dump
    def drop_absent_response(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("response_status") is None:
            data.pop("response_status", None)
        return data


class DeliveryAttemptPage(Schema):
    items = fields.List(fields.Nested(DeliveryAttemptOut))
    next_cursor = fields.String(allow_none=True)


# --- views -------------------------------------------------------------------------------


@blp.route("")
class Subscriptions(MethodView):
    @tenant_access(*ROLES)
    @blp.arguments(SubscriptionFields)
    @blp.response(201, SubscriptionOut)
    @blp.doc(security=SECURITY)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Subscribe to a topic (creates the consumer group on every partition)."""
        _refuse_kafka(body)
        session = services().db_session()
        caller = principal()
        topic = resolve_topic(session, caller, body["topic"])
        check_consumer(topic, caller)
        values = _with_defaults(body, topic)
        _check_rules(values, topic, caller.tenant_id)
        check_subscription_quota(caller.tenant_id)
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
        services().streams.create_group(
            topic.id, topic.partition_count,
            group_name(caller.tenant_id, subscription.consumer_group),
            from_start=subscription.offset_reset_policy == "earliest",
        )
        session.commit()
        _announce(subscription, "upsert")
        return subscription_view(subscription, _label(session, subscription, topic))

    @tenant_access(*ROLES)
    @blp.arguments(SubscriptionListArgs, location="query")
    @blp.response(200, SubscriptionPage)
    @blp.doc(security=SECURITY)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the tenant's subscriptions, oldest first."""
        session = services().db_session()
        caller = principal()
        stmt = select(Subscription).where(Subscription.tenant_id == caller.tenant_id)
        if "topic" in args:
            topic = _lookup_topic(session, caller, args["topic"])
            if topic is None:
                return {"items": [], "next_cursor": None}
            stmt = stmt.where(Subscription.topic_id == topic.id)
        if "status" in args:
            stmt = stmt.where(Subscription.status == args["status"])
        rows, cursor = paginate(session, stmt, Subscription.created_at, Subscription.id,
                                limit=args["limit"], cursor=args["cursor"])
        labels = topic_labels(session, caller.tenant_id, (row.topic_id for row in rows))
        return {"items": [subscription_view(row, labels[row.topic_id]) for row in rows],
                "next_cursor": cursor}


@blp.route("/<subscription_id>")
class SubscriptionById(MethodView):
    @tenant_access(*ROLES)
    @blp.response(200, SubscriptionWithStats)
    @blp.doc(security=SECURITY)
    def get(self, subscription_id: str) -> dict[str, Any]:
        """A subscription with its lag, pending deliveries and delivery counters."""
        session = services().db_session()
        subscription = find_subscription(session, principal(), subscription_id)
        topic = _topic_of(session, subscription)
        view = subscription_view(subscription, _label(session, subscription, topic))
        return {**view, "stats": subscription_stats(subscription, topic)}

    @tenant_access(*ROLES)
    @blp.arguments(SubscriptionUpdate)
    @blp.response(200, SubscriptionOut)
    @blp.doc(security=SECURITY)
    def put(self, body: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Update a subscription (partial); workers apply the change within 2 s."""
        session = services().db_session()
        caller = principal()
        subscription = find_subscription(session, caller, subscription_id)
        topic = _topic_of(session, subscription)
        label = _label(session, subscription, topic)
        _check_immutable(subscription, label, body)
        _refuse_kafka(body)
        changes = {k: v for k, v in body.items() if k not in IMMUTABLE}
        if "handler_config" in changes:
            raw = (request.get_json(silent=True) or {}).get("handler_config") or {}
            changes["handler_config"] = keep_secrets(raw, changes["handler_config"],
                                                     subscription.handler_config)
        current = {name: getattr(subscription, name) for name in SubscriptionFields._declared_fields
                   if name != "topic"}
        _check_rules({**current, **changes}, topic, caller.tenant_id)
        for name, value in changes.items():
            setattr(subscription, name, value)
        session.commit()
        _announce(subscription, "upsert")
        return subscription_view(subscription, label)

    @tenant_access(*ROLES)
    @blp.response(204)
    @blp.doc(security=SECURITY)
    def delete(self, subscription_id: str) -> None:
        """Delete a subscription; its group goes with the last subscription sharing it."""
        session = services().db_session()
        subscription = find_subscription(session, principal(), subscription_id)
        topic = _topic_of(session, subscription)
        session.delete(subscription)
        session.commit()
        # Counted after the commit: of two concurrent deletes of a group's last two
        # subscriptions, the later one sees none left and removes the group.
        if _group_members(session, subscription) == 0:
            services().streams.destroy_group(
                topic.id, topic.partition_count,
                group_name(subscription.tenant_id, subscription.consumer_group))
        remove_subscription_keys([subscription.id])
        _announce(subscription, "delete")


@blp.route("/<subscription_id>/pause")
class SubscriptionPause(MethodView):
    @tenant_access(*ROLES)
    @blp.response(200, SubscriptionOut)
    @blp.doc(security=SECURITY)
    def post(self, subscription_id: str) -> dict[str, Any]:
        """Stop starting deliveries (within 2 s); messages wait, nothing is lost."""
        return _set_status(subscription_id, "paused")


@blp.route("/<subscription_id>/resume")
class SubscriptionResume(MethodView):
    @tenant_access(*ROLES)
    @blp.response(200, SubscriptionOut)
    @blp.doc(security=SECURITY)
    def post(self, subscription_id: str) -> dict[str, Any]:
        """Continue delivering where the subscription stopped."""
        return _set_status(subscription_id, "active")


@blp.route("/<subscription_id>/seek")
class SubscriptionSeek(MethodView):
    @tenant_access(*ROLES)
    @blp.arguments(SeekBody)
    @blp.response(200, SubscriptionOut)
    @blp.doc(security=SECURITY)
    def post(self, body: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Replay or skip: move the group to the earliest or latest entry, to an offset
        (the next delivery is the entry at it) or to a time (on every partition)."""
        session = services().db_session()
        subscription = find_subscription(session, principal(), subscription_id)
        topic = _topic_of(session, subscription)
        group = group_name(subscription.tenant_id, subscription.consumer_group)
        for partition, start in _seek_targets(topic, body):
            try:
                services().streams.seek_group(topic.id, partition, group, start,
                                              past_end_ok="offset" not in body)
            except ValueError as exc:
                raise ValidationError("the offset is past the end of the partition",
                                      {"offset": [str(exc)]}) from None
        _announce(subscription, "upsert")
        return subscription_view(subscription, _label(session, subscription, topic))


@blp.route("/<subscription_id>/deliveries")
class SubscriptionDeliveries(MethodView):
    @tenant_access(*ROLES)
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryAttemptPage)
    @blp.doc(security=SECURITY)
    def get(self, args: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Delivery attempts (consumption records), newest first."""
        session = services().db_session()
        subscription = find_subscription(session, principal(), subscription_id)
        stmt = select(ConsumptionRecord).where(
            ConsumptionRecord.subscription_id == subscription.id)
        if "status" in args:
            stmt = stmt.where(ConsumptionRecord.status == args["status"])
        rows, cursor = paginate(session, stmt, ConsumptionRecord.consumed_at,
                                ConsumptionRecord.id, limit=args["limit"],
                                cursor=args["cursor"], newest_first=True)
        return {"items": [_delivery_view(row) for row in rows], "next_cursor": cursor}


# --- lookups shared with other resources ---------------------------------------------------


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


def resolve_topic(session: Session, caller: Principal, ref: str) -> Topic:
    """`name` in the caller's tenant, or `<tenant>/<name>` naming another tenant's public
    topic; anything else is `TopicNotFound`."""
    topic = _lookup_topic(session, caller, ref)
    if topic is None:
        raise TopicNotFound(ref)
    return topic


def _lookup_topic(session: Session, caller: Principal, ref: str) -> Topic | None:
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


def check_consumer(topic: Topic, caller: Principal) -> None:
    """Consumer keys must be on the topic's `allowed_consumers` when it is not empty."""
    if caller.is_admin or not topic.allowed_consumers:
        return
    if caller.key_name not in topic.allowed_consumers:
        raise Forbidden(f"key '{caller.key_name}' may not subscribe to topic '{topic.name}'")


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


def remove_subscription_keys(subscription_ids: Iterable[str]) -> None:
    """Delete the Redis keys that belong to subscriptions: counters and dead letters."""
    keys = services().keys
    names = [name for sid in subscription_ids
             for name in (keys.subscription_counters(sid), keys.dead_letters(sid))]
    for start in range(0, len(names), 500):
        services().redis.delete(*names[start:start + 500])


def subscription_view(subscription: Subscription, label: str) -> dict[str, Any]:
    """The subscription object as answered (secrets hidden)."""
    view = {name: getattr(subscription, name) for name in SubscriptionOut._declared_fields
            if name != "topic"}
    view["topic"] = label
    view["handler_config"] = public_view(subscription.handler_config or {})
    return view


def subscription_stats(subscription: Subscription, topic: Topic) -> dict[str, int]:
    """Lag and pending of the subscription's group (summed over partitions) and its
    delivery counters (kept by the workers; absent = 0)."""
    group = group_name(subscription.tenant_id, subscription.consumer_group)
    partitions = services().streams.partition_stats(topic.id, topic.partition_count)
    mine = [g for p in partitions for g in p.groups if g.name == group]
    counters = services().redis.hgetall(services().keys.subscription_counters(subscription.id))
    stats = {"lag": sum(g.lag for g in mine), "pending": sum(g.pending for g in mine)}
    for name, field_name in COUNTERS.items():
        stats[name] = _int(counters.get(field_name))
    return stats


# --- helpers -------------------------------------------------------------------------------


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _refuse_kafka(body: dict[str, Any]) -> None:
    if body.get("subscription_type") == "kafka_consumer":
        raise BackendNotSupported(
            "the kafka backend is not available in this edition",
            {"subscription_type": ["kafka_consumer is not available"]})


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


def _topic_of(session: Session, subscription: Subscription) -> Topic:
    topic = session.get(Topic, subscription.topic_id)
    if topic is None:  # deleted with its subscriptions a moment ago
        raise SubscriptionNotFound(subscription.id)
    return topic


def _label(session: Session, subscription: Subscription, topic: Topic) -> str:
    if topic.tenant_id == subscription.tenant_id:
        return topic.name
    return topic_labels(session, subscription.tenant_id, [topic.id])[topic.id]


def _group_members(session: Session, subscription: Subscription) -> int:
    return session.scalar(
        select(func.count()).select_from(Subscription).where(
            Subscription.topic_id == subscription.topic_id,
            Subscription.tenant_id == subscription.tenant_id,
            Subscription.consumer_group == subscription.consumer_group)
    ) or 0


def _announce(subscription: Subscription, op: Op) -> None:
    announce(services().redis, services().keys, "subscription", subscription.id, op)


def _set_status(subscription_id: str, status: str) -> dict[str, Any]:
    session = services().db_session()
    subscription = find_subscription(session, principal(), subscription_id)
    topic = _topic_of(session, subscription)
    subscription.status = status
    session.commit()
    _announce(subscription, "upsert")
    return subscription_view(subscription, _label(session, subscription, topic))


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


def _delivery_view(record: ConsumptionRecord) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "status": record.status,
        "attempt": record.retry_count + 1,
        "processing_time_ms": record.processing_time_ms,
        "error_message": record.error_message,
        "response_status": record.response_status,
        "consumed_at": record.consumed_at,
    }
