"""Publishing endpoints: single, batch, and publishing through the topic's path.

The view functions (`publish_single`, `publish_batch`, `publish_to_topic`) are also what the
publish fast path (`api.fast_path`) runs, with the same schemas and roles."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from api.auth import PRODUCERS, principal, tenant_access
from api.context import scope
from api.fields import Timestamp, iso
from api.message_body import BatchOptions, MessageFields
from api.openapi import raises
from api.parsing import Blueprint, FastLoad
from api.responses import json_response
from api.services.publishing import admit, publish, require_payload
from publishing.jobs import Published

PREFIX = ""
blp = Blueprint("publish", __name__, description="Publishing messages")

MAX_BATCH = 1000


class PublishBody(MessageFields):
    topic = fields.String(required=True, validate=validate.Length(1, 400))


class BatchFields(FastLoad):
    messages = fields.List(fields.Nested(MessageFields), required=True,
                           validate=validate.Length(1, MAX_BATCH))
    options = fields.Nested(BatchOptions)


class BatchBody(BatchFields):
    topic = fields.String(required=True, validate=validate.Length(1, 400))


class TopicPublishBody(MessageFields):
    """Either one message's fields, or `messages` for a batch."""

    payload = fields.Raw(allow_none=True)
    messages = fields.List(fields.Nested(MessageFields), validate=validate.Length(1, MAX_BATCH))
    options = fields.Nested(BatchOptions)


# Output fields are `required` for the document only: every answer has them all, and a
# client (or a schema check) can tell a single message's answer from a batch's by them.


class PublishOut(Schema):
    message_id = fields.String(required=True)
    topic = fields.String(required=True)
    partition = fields.Integer(required=True)
    offset = fields.String(required=True, allow_none=True)
    timestamp = Timestamp(required=True)
    duplicate = fields.Boolean(required=True)


class PartitionOffset(Schema):
    partition = fields.Integer(required=True)
    offset = fields.String(required=True, allow_none=True)


class BatchOut(Schema):
    message_ids = fields.List(fields.String(), required=True)
    partitions = fields.List(fields.Nested(PartitionOffset), required=True)
    timestamp = Timestamp(required=True)
    duplicates = fields.List(fields.Integer(), required=True, metadata={
        "description": "indexes of the messages whose message_id was seen before"})


#: `/topics/{name}/publish` answers as `/publish` for one message, as `/publish/batch` for
#: `messages` (flask-smorest documents one schema per status and media type).
ONE_OR_BATCH = {"oneOf": [{"$ref": "#/components/schemas/PublishOut"},
                          {"$ref": "#/components/schemas/BatchOut"}]}


# The views answer with ready-made JSON responses (flask-smorest passes a Response through
# unserialized); the schemas above document them.


def _publish_one(topic_name: str, message: dict[str, Any]) -> Response:
    here, caller = scope(), principal()
    topic = admit(here, caller, topic_name, 1)
    [result] = publish(here, topic, caller, [message], batch=False)
    body = {"message_id": result.message_id, "topic": result.topic_name,
            "partition": result.partition, "offset": result.offset,
            "timestamp": iso(result.published_at), "duplicate": result.duplicate}
    return json_response(body, 200 if result.duplicate else 201)


def _publish_batch(topic_name: str, messages: list[dict[str, Any]]) -> Response:
    here, caller = scope(), principal()
    topic = admit(here, caller, topic_name, len(messages))
    results = publish(here, topic, caller, messages, batch=True)
    return json_response(_batch_answer(results), 200 if all(r.duplicate for r in results) else 201)


def _batch_answer(results: list[Published]) -> dict[str, Any]:
    return {
        "message_ids": [r.message_id for r in results],
        "partitions": [{"partition": r.partition, "offset": r.offset} for r in results],
        "timestamp": iso(max(r.published_at for r in results)),
        "duplicates": [i for i, r in enumerate(results) if r.duplicate],
    }


def publish_single(body: dict[str, Any]) -> Response:
    return _publish_one(body["topic"], body)


def publish_batch(body: dict[str, Any]) -> Response:
    return _publish_batch(body["topic"], body["messages"])


def publish_to_topic(body: dict[str, Any], name: str) -> Response:
    if "messages" in body:
        return _publish_batch(name, body["messages"])
    require_payload(body)
    return _publish_one(name, body)


SINGLE, BATCH, TO_TOPIC = PublishBody(), BatchBody(), TopicPublishBody()


@blp.route("/publish")
class Publish(MethodView):
    @tenant_access(*PRODUCERS, publishes=True)
    @blp.arguments(SINGLE)
    @blp.response(201, PublishOut)
    @blp.alt_response(200, schema=PublishOut, description="duplicate message_id")
    @raises(404, 409, 429)
    def post(self, body: dict[str, Any]) -> Response:
        """Publish one message."""
        return publish_single(body)


@blp.route("/publish/batch")
class PublishBatch(MethodView):
    @tenant_access(*PRODUCERS, publishes=True)
    @blp.arguments(BATCH)
    @blp.response(201, BatchOut)
    @blp.alt_response(200, schema=BatchOut,
                      description="every message_id was seen before (see `duplicates`)")
    @raises(404, 409, 429)
    def post(self, body: dict[str, Any]) -> Response:
        """Publish up to 1,000 messages in order; one invalid message rejects the batch."""
        return publish_batch(body)


@blp.route("/topics/<name>/publish")
class TopicPublish(MethodView):
    @tenant_access(*PRODUCERS, publishes=True)
    @blp.arguments(TO_TOPIC)
    @blp.response(201, ONE_OR_BATCH, description="published: one message's answer, or a "
                  "batch's (`messages` given)")
    @blp.alt_response(200, schema=ONE_OR_BATCH, description="a duplicate message_id (one "
                      "message), or every message_id was seen before (a batch)")
    @raises(409, 429)
    def post(self, body: dict[str, Any], name: str) -> Response:
        """Publish one message, or a batch with `messages`, to the topic in the path."""
        return publish_to_topic(body, name)
