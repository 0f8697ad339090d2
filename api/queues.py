"""Queues (topics): create, list, read with live stream statistics, update, delete, purge."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow import ValidationError as InvalidFields
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import principal, tenant_access
from api.fields import StrictBoolean, Timestamp, name_field, strict_int
from api.formats import CODEC_FIELDS, check_codec
from api.pagination import PageArgs, paginate
from api.parsing import Blueprint
from api.quotas import check_count, tenant_quotas
from api.schemas import check_subject_reference
from api.services import services
from broker.control import announce
from broker.keys import group_name
from formats.avro import avro_schema_of
from formats.json_schema import SchemaDefinitionError, checked_schema
from models import Schedule, Subscription, Topic
from mq.errors import BackendNotSupported, TopicAlreadyExists, TopicNotFound, ValidationError

PREFIX = "/queues"
blp = Blueprint("queues", __name__, description="Queues (topics)")

TOPIC_TYPES = ("redis_stream", "kafka")
FORMATS = ("json", "msgpack", "avro", "protobuf")
COMPRESSIONS = ("none", "gzip", "zstd")
ENCRYPTIONS = ("none", "aes-256-gcm")
STATUSES = ("active", "paused", "archived")
MIB = 1024 * 1024
IMMUTABLE = ("name", "topic_type")


class TopicFields(Schema):
    """Every settable field of a topic, with the contract's bounds and defaults."""

    name = name_field(required=True)
    display_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    description = fields.String(validate=validate.Length(max=10_000))
    topic_type = fields.String(validate=validate.OneOf(TOPIC_TYPES))
    partition_count = strict_int(1, 64)
    replication_factor = strict_int(1, 16)
    retention_ms = strict_int(60_000, 31_536_000_000)
    max_message_bytes = strict_int(1, 10 * MIB)
    message_format = fields.String(validate=validate.OneOf(FORMATS))
    schema_subject = fields.String(allow_none=True, validate=validate.Length(1, 255))
    schema_definition = fields.Dict(allow_none=True)
    compression_type = fields.String(validate=validate.OneOf(COMPRESSIONS))
    encryption = fields.String(validate=validate.OneOf(ENCRYPTIONS))
    is_public = StrictBoolean()
    allowed_producers = fields.List(fields.String(validate=validate.Length(1, 200)),
                                    validate=validate.Length(max=1000))
    allowed_consumers = fields.List(fields.String(validate=validate.Length(1, 200)),
                                    validate=validate.Length(max=1000))
    status = fields.String(validate=validate.OneOf(STATUSES))

    @validates_schema
    def check_schema_definition(self, data: dict[str, Any], **_: Any) -> None:
        definition = data.get("schema_definition")
        if data.get("message_format") == "avro" and avro_schema_of(definition) is not None:
            return  # an Avro schema: it drives the encoding (`api.formats`)
        if definition is not None:
            try:
                checked_schema(definition)
            except SchemaDefinitionError as exc:
                raise InvalidFields({"schema_definition": [str(exc)]}) from None


class TopicUpdate(TopicFields):
    """`PUT` is partial: every field optional; immutable ones may be re-sent unchanged."""

    name = name_field()


class TopicOut(Schema):
    id = fields.String()
    name = fields.String()
    display_name = fields.String(allow_none=True)
    description = fields.String()
    topic_type = fields.String()
    partition_count = fields.Integer()
    replication_factor = fields.Integer()
    retention_ms = fields.Integer()
    max_message_bytes = fields.Integer()
    message_format = fields.String()
    schema_subject = fields.String(allow_none=True)
    schema_definition = fields.Dict(allow_none=True)
    compression_type = fields.String()
    encryption = fields.String()
    is_public = fields.Boolean()
    allowed_producers = fields.List(fields.String())
    allowed_consumers = fields.List(fields.String())
    status = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class PartitionStatsOut(Schema):
    partition = fields.Integer()
    length = fields.Integer()
    first_offset = fields.String(allow_none=True)
    last_offset = fields.String(allow_none=True)


class TopicStatsOut(Schema):
    length = fields.Integer()
    first_offset = fields.String(allow_none=True)
    last_offset = fields.String(allow_none=True)
    subscriptions = fields.Integer()
    pending = fields.Integer()
    lag = fields.Integer()
    published_total = fields.Integer()
    partitions = fields.List(fields.Nested(PartitionStatsOut))


class TopicWithStats(TopicOut):
    stats = fields.Nested(TopicStatsOut)


class TopicPage(Schema):
    items = fields.List(fields.Nested(TopicOut))
    next_cursor = fields.String(allow_none=True)


class TopicListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(STATUSES))


class PurgeOut(Schema):
    purged = fields.Integer()


def find_topic(session: Session, tenant_id: str, name: str) -> Topic:
    """The tenant's topic called `name`, or `TopicNotFound`."""
    topic = session.scalar(select(Topic).where(Topic.tenant_id == tenant_id, Topic.name == name))
    if topic is None:
        raise TopicNotFound(name)
    return topic


@blp.route("")
class Queues(MethodView):
    @tenant_access("admin")
    @blp.arguments(TopicFields)
    @blp.response(201, TopicOut)
    @blp.doc(security=[{"bearer": []}])
    def post(self, body: dict[str, Any]) -> Topic:
        """Create a queue."""
        if body.get("topic_type") == "kafka":
            raise BackendNotSupported("the kafka backend is not available in this edition",
                                      {"topic_type": ["kafka is not available"]})
        session = services().db_session()
        tenant_id = principal().tenant_id
        limit = tenant_quotas(tenant_id).topics
        if limit:
            check_count("topics", limit, session.scalar(
                select(func.count()).select_from(Topic).where(Topic.tenant_id == tenant_id)) or 0)
        # The contract's example: "orders" is displayed as "Orders" unless told otherwise.
        body.setdefault("display_name", body["name"][:1].upper() + body["name"][1:])
        check_codec(body)
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

    @tenant_access()
    @blp.arguments(TopicListArgs, location="query")
    @blp.response(200, TopicPage)
    @blp.doc(security=[{"bearer": []}])
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List queues, by name."""
        stmt = select(Topic).where(Topic.tenant_id == principal().tenant_id)
        if "status" in args:
            stmt = stmt.where(Topic.status == args["status"])
        items, cursor = paginate(services().db_session(), stmt, Topic.name, Topic.id,
                                 limit=args["limit"], cursor=args["cursor"])
        return {"items": items, "next_cursor": cursor}


@blp.route("/<name>")
class QueueByName(MethodView):
    @tenant_access()
    @blp.response(200, TopicWithStats)
    @blp.doc(security=[{"bearer": []}])
    def get(self, name: str) -> dict[str, Any]:
        """A queue with its live statistics."""
        session = services().db_session()
        topic = find_topic(session, principal().tenant_id, name)
        fields_of_topic = {name: getattr(topic, name) for name in TopicOut._declared_fields}
        return {**fields_of_topic, "stats": _topic_stats(session, topic)}

    @tenant_access("admin")
    @blp.arguments(TopicUpdate)
    @blp.response(200, TopicOut)
    @blp.doc(security=[{"bearer": []}])
    def put(self, body: dict[str, Any], name: str) -> Topic:
        """Update a queue (partial). `name` and `topic_type` are immutable; partitions only
        grow."""
        session = services().db_session()
        topic = find_topic(session, principal().tenant_id, name)
        _check_update(topic, body)
        check_codec({**{f: getattr(topic, f) for f in CODEC_FIELDS}, **body})
        if body.get("schema_subject"):
            check_subject_reference(session, topic.tenant_id, body["schema_subject"])
        old_partitions = topic.partition_count
        for field_name, value in body.items():
            setattr(topic, field_name, value)
        if topic.partition_count > old_partitions:
            # Groups first: a Redis failure then answers 503 with nothing changed.
            _extend_groups(session, topic)
        session.commit()
        services().cache.invalidate()
        announce(services().redis, services().keys, "topic", topic.id, "upsert")
        return topic

    @tenant_access("admin")
    @blp.response(204)
    @blp.doc(security=[{"bearer": []}])
    def delete(self, name: str) -> None:
        """Delete a queue with its streams, subscriptions, schedules and stored messages."""
        session = services().db_session()
        topic = find_topic(session, principal().tenant_id, name)
        subscription_ids = session.scalars(
            select(Subscription.id).where(Subscription.topic_id == topic.id)).all()
        for table in (Schedule, Subscription):
            session.execute(delete(table).where(table.topic_id == topic.id))
        session.delete(topic)
        # Streams go before the commit: if Redis fails, the 503 leaves the queue whole for a
        # retry instead of a deleted queue whose streams nobody would ever remove.
        session.flush()
        services().streams.delete(topic.id, topic.partition_count)
        session.commit()
        services().cache.invalidate()
        from api.subscriptions import remove_subscription_keys  # it imports this module

        remove_subscription_keys(subscription_ids)
        announce(services().redis, services().keys, "topic", topic.id, "delete")


@blp.route("/<name>/purge")
class QueuePurge(MethodView):
    @tenant_access("admin")
    @blp.response(200, PurgeOut)
    @blp.doc(security=[{"bearer": []}])
    def post(self, name: str) -> dict[str, int]:
        """Remove every stored message; subscriptions stay."""
        topic = find_topic(services().db_session(), principal().tenant_id, name)
        return {"purged": services().streams.purge(topic.id, topic.partition_count)}


def _check_update(topic: Topic, body: dict[str, Any]) -> None:
    problems: dict[str, list[str]] = {}
    for field_name in IMMUTABLE:
        if field_name in body and body[field_name] != getattr(topic, field_name):
            problems[field_name] = ["cannot be changed"]
    if body.get("partition_count", topic.partition_count) < topic.partition_count:
        problems["partition_count"] = [f"may only grow (now {topic.partition_count})"]
    if problems:
        raise ValidationError("immutable fields cannot change", problems)


def _extend_groups(session: Session, topic: Topic) -> None:
    """Give every subscription group of the topic a group on the new partitions."""
    groups = session.execute(
        select(Subscription.tenant_id, Subscription.consumer_group)
        .where(Subscription.topic_id == topic.id)
        .distinct()
    ).all()
    for tenant_id, consumer_group in groups:
        services().streams.create_group(topic.id, topic.partition_count,
                                        group_name(tenant_id, consumer_group), from_start=True)


def _topic_stats(session: Session, topic: Topic) -> dict[str, Any]:
    partitions = services().streams.partition_stats(topic.id, topic.partition_count)
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
