"""A subscription's dead letters: list, redrive (back to that subscription only), purge."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate, validates, validates_schema
from marshmallow import ValidationError as InvalidFields

from api.auth import CONSUMERS, principal, tenant_access
from api.context import scope, services
from api.pagination import PageArgs, page_of
from api.parsing import Blueprint
from api.services.dead_letters import (
    list_dead_letters,
    purge_dead_letters,
    redrive_dead_letters,
)
from api.services.lookups import find_subscription
from broker.streams import parse_entry_id

PREFIX = "/subscriptions"
blp = Blueprint("dead_letters", __name__, description="Dead letters of a subscription")

MAX_REDRIVE = 10_000


class DeadLetterArgs(PageArgs):
    """A page of dead letters: the cursor is a stream entry id."""

    cursor = fields.String(load_default=None, validate=validate.Regexp(
        r"^\d{1,20}-\d{1,20}$", error="not a cursor this API issued"))

    @validates("cursor")
    def check_cursor(self, value: str | None, **_: Any) -> None:
        """An id Redis takes as a range's exclusive end: within its range and above 0-0
        (the first id there is); the pattern alone lets `0-0` and 20 nines through."""
        try:
            entry_id = parse_entry_id(value) if value is not None else (1, 0)
        except ValueError:
            entry_id = (0, 0)
        if entry_id <= (0, 0):
            raise InvalidFields("not a cursor this API issued")


class DeadLetterOut(Schema):
    id = fields.String()
    message_id = fields.String()
    subscription_id = fields.String()
    original_topic = fields.String()
    original_partition = fields.Integer()
    original_offset = fields.String()
    original_timestamp = fields.String()
    key = fields.String(allow_none=True)
    headers = fields.Dict()
    payload = fields.Raw(allow_none=True)
    failure_reason = fields.String()
    error_message = fields.String(allow_none=True)
    retry_count = fields.Integer()
    failed_at = fields.String()


DeadLetterPage = page_of(DeadLetterOut)


class DeadLetterRedriveBody(Schema):
    max_messages = fields.Integer(strict=True, validate=validate.Range(1, MAX_REDRIVE))
    ids = fields.List(fields.String(validate=validate.Length(1, 64)),
                      validate=validate.Length(1, 1000))

    #: Not both (`api.openapi.finish`).
    OPENAPI_EXTRA = {"not": {"required": ["ids", "max_messages"]}}

    @validates_schema
    def one_selector(self, data: dict[str, Any], **_: Any) -> None:
        if "ids" in data and "max_messages" in data:
            raise InvalidFields({"ids": ["give either ids or max_messages, not both"]})


class DeadLetterRedriveOut(Schema):
    redriven = fields.Integer()


class DeadLetterPurgeOut(Schema):
    purged = fields.Integer()


@blp.route("/<subscription_id>/dead-letters")
class DeadLetters(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.arguments(DeadLetterArgs, location="query")
    @blp.response(200, DeadLetterPage)
    def get(self, args: dict[str, Any], subscription_id: str) -> dict[str, Any]:
        """This subscription's dead-lettered messages, newest first."""
        session = scope().session
        subscription = find_subscription(session, principal(), subscription_id)
        items, cursor = list_dead_letters(session, services(), subscription,
                                          limit=args["limit"], cursor=args["cursor"])
        return {"items": items, "next_cursor": cursor}

    @tenant_access(*CONSUMERS)
    @blp.response(200, DeadLetterPurgeOut)
    def delete(self, subscription_id: str) -> dict[str, int]:
        """Remove every dead letter of this subscription."""
        subscription = find_subscription(scope().session, principal(), subscription_id)
        return {"purged": purge_dead_letters(services(), subscription)}


@blp.route("/<subscription_id>/dead-letters/redrive")
class DeadLetterRedrive(MethodView):
    @tenant_access(*CONSUMERS)
    @blp.arguments(DeadLetterRedriveBody)
    @blp.response(200, DeadLetterRedriveOut)
    def post(self, body: dict[str, Any], subscription_id: str) -> dict[str, int]:
        """Deliver dead letters again to this subscription only (attempts restart at 1);
        redriven entries leave the listing."""
        subscription = find_subscription(scope().session, principal(), subscription_id)
        count = redrive_dead_letters(services(), subscription, ids=body.get("ids"),
                                     max_messages=body.get("max_messages"))
        return {"redriven": count}
