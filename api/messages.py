"""Reading one message back, with its delivery state per subscription."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.auth import principal, tenant_access
from api.delayed import cancel
from api.fields import Timestamp
from api.formats import shown_payload
from api.parsing import Blueprint
from api.scheduling import delay_set
from api.services import services
from models import ConsumptionRecord, MessageRecord, Subscription, Topic
from models.base import utcnow
from mq.errors import MessageNotFound

PREFIX = "/messages"
blp = Blueprint("messages", __name__, description="Published messages")

#: Latest consumption record status -> the message's delivery status for that subscription.
DELIVERY_STATUS = {"success": "delivered", "failed": "retrying", "dead_letter": "dead_letter",
                   "filtered": "filtered", "expired": "expired"}


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


def _offset(record: MessageRecord) -> str | None:
    """The record's stream offset; one just published may have it only in its append marker
    yet (the group writer writes offsets back with its next group)."""
    if record.offset_value is not None or record.status != "published":
        return record.offset_value
    refs = [(record.topic_id, record.partition_id, record.id)]
    return services().streams.appended_offsets(refs).get(record.id)


def find_message(session: Session, tenant_id: str, message_id: str) -> MessageRecord:
    record = session.scalar(select(MessageRecord).where(
        MessageRecord.tenant_id == tenant_id, MessageRecord.message_id == message_id))
    if record is None:
        raise MessageNotFound(message_id)
    return record


@blp.route("/<path:message_id>")  # ids may hold "/" (any string is a valid id)
class MessageById(MethodView):
    @tenant_access()
    @blp.response(200, MessageOut)
    @blp.doc(security=[{"bearer": []}])
    def get(self, message_id: str) -> dict[str, Any]:
        """A message with its status and per-subscription delivery state."""
        session = services().db_session()
        record = find_message(session, principal().tenant_id, message_id)
        topic = session.get(Topic, record.topic_id)
        deliveries = _deliveries(session, record)
        payload, headers = shown_payload(record, topic)
        return {
            "message_id": record.message_id,
            "topic": topic.name if topic else None,
            "partition": record.partition_id,
            "offset": _offset(record),
            "key": record.message_key,
            "headers": headers,
            "payload": payload,
            "status": _message_status(record, deliveries),
            "published_at": record.published_at,
            "scheduled_at": record.scheduled_at,
            "expires_at": record.expires_at,
            "correlation_id": record.correlation_id,
            "trace_id": record.trace_id,
            "deliveries": deliveries,
        }

    @tenant_access("admin", "producer")
    @blp.response(204)
    @blp.doc(security=[{"bearer": []}])
    def delete(self, message_id: str) -> None:
        """Cancel a scheduled message (`409 CONFLICT` once it was released)."""
        session = services().db_session()
        cancel(session, delay_set(), find_message(session, principal().tenant_id, message_id))


def _message_status(record: MessageRecord, deliveries: list[dict[str, Any]]) -> str:
    """`expired` once a published message's `ttl_ms` ran out before any delivery succeeded."""
    expired = record.expires_at is not None and record.expires_at <= utcnow()
    delivered = any(d["status"] == "delivered" for d in deliveries)
    if record.status == "published" and expired and not delivered:
        return "expired"
    return record.status


def _deliveries(session: Session, record: MessageRecord) -> list[dict[str, Any]]:
    subscriptions = session.scalars(select(Subscription).where(
        Subscription.topic_id == record.topic_id, Subscription.tenant_id == record.tenant_id))
    attempts = {
        row.subscription_id: row
        for row in session.execute(
            select(ConsumptionRecord.subscription_id,
                   func.count().label("attempts"),
                   func.max(ConsumptionRecord.consumed_at).label("last_attempt_at"))
            .where(ConsumptionRecord.tenant_id == record.tenant_id,
                   ConsumptionRecord.message_id == record.message_id)
            .group_by(ConsumptionRecord.subscription_id))
    }
    latest = _latest_status(session, record)
    out = []
    for sub in subscriptions:
        seen = attempts.get(sub.id)
        out.append({
            "subscription_id": sub.id,
            "consumer_group": sub.consumer_group,
            "status": DELIVERY_STATUS.get(latest.get(sub.id, ""), "pending"),
            "attempts": seen.attempts if seen else 0,
            "last_attempt_at": seen.last_attempt_at if seen else None,
        })
    return out


def _latest_status(session: Session, record: MessageRecord) -> dict[str, str]:
    rows = session.execute(
        select(ConsumptionRecord.subscription_id, ConsumptionRecord.status)
        .where(ConsumptionRecord.tenant_id == record.tenant_id,
               ConsumptionRecord.message_id == record.message_id)
        .order_by(ConsumptionRecord.consumed_at)
    )
    return {subscription_id: status for subscription_id, status in rows}
