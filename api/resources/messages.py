"""Reading one message back, with its delivery state per subscription."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields

from api.auth import PRODUCERS, principal, tenant_access
from api.context import scope, services
from api.fields import Timestamp
from api.openapi import raises
from api.parsing import Blueprint
from api.services.messages import cancel, find_message, message_view

PREFIX = "/messages"
blp = Blueprint("messages", __name__, description="Published messages")


class DeliveryOut(Schema):
    subscription_id = fields.String()
    consumer_group = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    last_attempt_at = Timestamp(allow_none=True)


class MessageOut(Schema):
    message_id = fields.String()
    topic = fields.String()
    partition = fields.Integer()
    offset = fields.String(allow_none=True)
    key = fields.String(allow_none=True)
    headers = fields.Dict()
    payload = fields.Raw(allow_none=True)
    status = fields.String()
    published_at = Timestamp()
    scheduled_at = Timestamp(allow_none=True)
    expires_at = Timestamp(allow_none=True)
    correlation_id = fields.String(allow_none=True)
    trace_id = fields.String(allow_none=True)
    deliveries = fields.List(fields.Nested(DeliveryOut))


@blp.route("/<path:message_id>")  # ids may hold "/" (any string is a valid id)
class MessageById(MethodView):
    @tenant_access()
    @blp.response(200, MessageOut)
    def get(self, message_id: str) -> dict[str, Any]:
        """A message with its status and per-subscription delivery state."""
        here = scope()
        return message_view(here, *find_message(here.session, here.services.settings,
                                                principal().tenant_id, message_id))

    @tenant_access(*PRODUCERS)
    @blp.response(204)
    @raises(409)
    def delete(self, message_id: str) -> None:
        """Cancel a scheduled message (`409 CONFLICT` once it was released)."""
        session, svc = scope().session, services()
        record, _ = find_message(session, svc.settings, principal().tenant_id, message_id)
        cancel(session, svc.delays, record)
