"""Queues (topics): create, list, read with live stream statistics, update, delete, purge."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow import ValidationError as InvalidFields

from api.auth import principal, tenant_access
from api.context import scope, services
from api.fields import StrictBoolean, Timestamp, name_field, strict_int
from api.openapi import raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.services.lookups import find_topic
from api.services.topics import (
    create_topic,
    delete_topic,
    topic_stats,
    topics_query,
    update_topic,
)
from formats.avro import avro_schema_of
from formats.compression import COMPRESSIONS
from formats.json_schema import SchemaDefinitionError, checked_schema
from models import Topic

PREFIX = "/queues"
blp = Blueprint("queues", __name__, description="Queues (topics)")

TOPIC_TYPES = ("redis_stream", "kafka")
FORMATS = ("json", "msgpack", "avro", "protobuf")
ENCRYPTIONS = ("none", "aes-256-gcm")
STATUSES = ("active", "paused", "archived")
MIB = 1024 * 1024


class TopicFields(Schema):
    """Every settable field of a topic, with the contract's bounds and defaults."""

    name = name_field(required=True)
    display_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    description = fields.String(validate=validate.Length(max=10_000))
    topic_type = fields.String(validate=validate.OneOf(TOPIC_TYPES), metadata={
        "description": "`kafka` answers 422 BROKER_NOT_AVAILABLE in this edition"})
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
            return  # an Avro schema: it drives the encoding (`api.services.formats`)
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


TopicPage = page_of(TopicOut)


class TopicListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(STATUSES))


class PurgeOut(Schema):
    purged = fields.Integer()


@blp.route("")
class Queues(MethodView):
    @tenant_access("admin")
    @blp.arguments(TopicFields)
    @raises(409, 429)
    @blp.response(201, TopicOut)
    def post(self, body: dict[str, Any]) -> Topic:
        """Create a queue."""
        return create_topic(scope(), principal().tenant_id, body)

    @tenant_access()
    @blp.arguments(TopicListArgs, location="query")
    @blp.response(200, TopicPage)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List queues, by name."""
        stmt = topics_query(principal().tenant_id, args.get("status"))
        items, cursor = paginate(scope().session, stmt, Topic.name, Topic.id,
                                 limit=args["limit"], cursor=args["cursor"])
        return {"items": items, "next_cursor": cursor}


@blp.route("/<name>")
class QueueByName(MethodView):
    @tenant_access()
    @blp.response(200, TopicWithStats)
    def get(self, name: str) -> dict[str, Any]:
        """A queue with its live statistics."""
        session = scope().session
        topic = find_topic(session, principal().tenant_id, name)
        fields_of_topic = {name: getattr(topic, name) for name in TopicOut._declared_fields}
        return {**fields_of_topic, "stats": topic_stats(session, services().streams, topic)}

    @tenant_access("admin")
    @blp.arguments(TopicUpdate)
    @blp.response(200, TopicOut)
    def put(self, body: dict[str, Any], name: str) -> Topic:
        """Update a queue (partial). `name` and `topic_type` are immutable; partitions only
        grow."""
        session = scope().session
        topic = find_topic(session, principal().tenant_id, name)
        return update_topic(session, services(), topic, body)

    @tenant_access("admin")
    @blp.response(204)
    def delete(self, name: str) -> None:
        """Delete a queue with its streams, subscriptions, schedules and stored messages."""
        session = scope().session
        delete_topic(session, services(), find_topic(session, principal().tenant_id, name))


@blp.route("/<name>/purge")
class QueuePurge(MethodView):
    @tenant_access("admin")
    @blp.response(200, PurgeOut)
    def post(self, name: str) -> dict[str, int]:
        """Remove every stored message; subscriptions stay."""
        topic = find_topic(scope().session, principal().tenant_id, name)
        return {"purged": services().streams.purge(topic.id, topic.partition_count)}
