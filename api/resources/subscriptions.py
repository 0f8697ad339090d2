"""Subscriptions: create, list, read with live statistics, update, delete, pause, resume,
seek, and the delivery records (`api.services.subscriptions` does the work)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields, post_dump, validate, validates_schema
from marshmallow import ValidationError as InvalidFields

from api.auth import CONSUMERS, principal, tenant_access
from api.context import scope, services
from api.fields import Timestamp, name_field, strict_int
from api.openapi import HANDLER_CONFIG_REF, raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.services import subscriptions as service
from api.services.lookups import find_subscription
from broker.outcomes import RECORDED_STATUSES
from broker.streams import parse_entry_id
from handlers.configs import MessageFilter
from handlers.registry import validate_handler_config
from models import ConsumptionRecord, Subscription

PREFIX = "/subscriptions"
blp = Blueprint("subscriptions", __name__, description="Subscriptions")

TYPES = ("webhook", "redis_consumer", "kafka_consumer")
POLICIES = ("latest", "earliest")
STATUSES = ("active", "paused")
TOPIC_REF = r"^(?:[a-z0-9][a-z0-9-]{0,62}/)?[A-Za-z0-9._-]{1,200}$"
MAX_DELAY_MS = 86_400_000


class HandlerConfig(fields.Dict):
    """`handler_config`, checked by the validator registered for its `type`; documented as
    one variant per handler type (`api.openapi`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"allOf": [{"$ref": HANDLER_CONFIG_REF}]}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return validate_handler_config(value, services().settings)


class SubscriptionFields(Schema):
    """Every settable field, with the contract's bounds; defaults are applied on create."""

    topic = fields.String(required=True, validate=validate.Regexp(
        TOPIC_REF, error="a topic name, or '<tenant>/<topic>' for another tenant's public topic"))
    consumer_group = name_field(required=True)
    consumer_name = name_field()
    subscription_type = fields.String(validate=validate.OneOf(TYPES), metadata={
        "description": "`kafka_consumer` answers 422 BROKER_NOT_AVAILABLE in this edition"})
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


SubscriptionPage = page_of(SubscriptionOut)


class SubscriptionListArgs(PageArgs):
    topic = fields.String(validate=validate.Length(max=300))
    status = fields.String(validate=validate.OneOf(STATUSES))


class SeekBody(Schema):
    """Exactly one of `to`, `offset` (with `partition`) or `timestamp`."""

    to = fields.String(validate=validate.OneOf(("earliest", "latest")))
    offset = fields.String(validate=validate.Length(1, 64))
    partition = strict_int(0, 63)
    timestamp = Timestamp()

    #: Exactly one target; `partition` only with `offset` (`api.openapi.finish`).
    OPENAPI_EXTRA = {"oneOf": [
        {"required": ["to"], "not": {"anyOf": [
            {"required": ["offset"]}, {"required": ["timestamp"]}, {"required": ["partition"]}]}},
        {"required": ["offset"], "not": {"anyOf": [
            {"required": ["to"]}, {"required": ["timestamp"]}]}},
        {"required": ["timestamp"], "not": {"anyOf": [
            {"required": ["to"]}, {"required": ["offset"]}, {"required": ["partition"]}]}},
    ]}

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
    status = fields.String(validate=validate.OneOf(RECORDED_STATUSES))


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


DeliveryAttemptPage = page_of(DeliveryAttemptOut)


# --- views -------------------------------------------------------------------------------


@blp.route("")
class Subscriptions(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.arguments(SubscriptionFields)
    @raises(404, 409, 429)
    @blp.response(201, SubscriptionOut)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Subscribe to a topic (creates the consumer group on every partition)."""
        return service.create_subscription(scope(), principal(), body)

    @tenant_access(*CONSUMERS)
    @blp.arguments(SubscriptionListArgs, location="query")
    @blp.response(200, SubscriptionPage)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the tenant's subscriptions, oldest first."""
        session, caller = scope().session, principal()
        stmt = service.subscriptions_query(session, caller, args)
        if stmt is None:
            return {"items": [], "next_cursor": None}
        rows, cursor = paginate(session, stmt, Subscription.created_at, Subscription.id,
                                limit=args["limit"], cursor=args["cursor"])
        return {"items": service.subscription_views(session, caller.tenant_id, rows),
                "next_cursor": cursor}


@blp.route("/<subscription_id>")
class SubscriptionById(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.response(200, SubscriptionWithStats)
    def get(self, subscription_id: str) -> dict[str, Any]:
        """A subscription with its lag, pending deliveries and delivery counters."""
        return service.subscription_with_stats(scope().session, services(), principal(),
                                               subscription_id)

    @tenant_access(*CONSUMERS)
    @blp.arguments(SubscriptionUpdate)
    @blp.response(200, SubscriptionOut)
    def put(self, body: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Update a subscription (partial); workers apply the change within 2 s."""
        raw = (request.get_json(silent=True) or {}).get("handler_config")
        return service.update_subscription(scope(), principal(), subscription_id, body, raw)

    @tenant_access(*CONSUMERS)
    @blp.response(204)
    def delete(self, subscription_id: str) -> None:
        """Delete a subscription; its group goes with the last subscription sharing it."""
        service.delete_subscription(scope().session, services(), principal(), subscription_id)


@blp.route("/<subscription_id>/pause")
class SubscriptionPause(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.response(200, SubscriptionOut)
    def post(self, subscription_id: str) -> dict[str, Any]:
        """Stop starting deliveries (within 2 s); messages wait, nothing is lost."""
        return service.set_status(scope().session, services(), principal(), subscription_id,
                                  "paused")


@blp.route("/<subscription_id>/resume")
class SubscriptionResume(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.response(200, SubscriptionOut)
    def post(self, subscription_id: str) -> dict[str, Any]:
        """Continue delivering where the subscription stopped."""
        return service.set_status(scope().session, services(), principal(), subscription_id,
                                  "active")


@blp.route("/<subscription_id>/seek")
class SubscriptionSeek(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.arguments(SeekBody)
    @blp.response(200, SubscriptionOut)
    def post(self, body: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Replay or skip: move the group to the earliest or latest entry, to an offset
        (the next delivery is the entry at it) or to a time (on every partition)."""
        return service.seek(scope().session, services(), principal(), subscription_id, body)


@blp.route("/<subscription_id>/deliveries")
class SubscriptionDeliveries(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryAttemptPage)
    def get(self, args: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """Delivery attempts (consumption records), newest first."""
        session = scope().session
        subscription = find_subscription(session, principal(), subscription_id)
        query = service.deliveries_query(subscription, args, services().settings)
        rows, cursor = paginate(session, query,
                                ConsumptionRecord.consumed_at, ConsumptionRecord.id,
                                limit=args["limit"], cursor=args["cursor"], newest_first=True)
        return {"items": [service.delivery_view(row) for row in rows], "next_cursor": cursor}
