"""Published messages read back with their delivery state, and cancelling scheduled ones.

Delayed and scheduled messages are published by the group writer like any message
(`publishing.group`): the record is committed with status `scheduled`, then the message is
parked in the delay set (`broker.delays`); `202` is answered only after both. If Redis
refuses the park, the record is deleted again and the client gets `503`; should that delete
fail too, the record stays `scheduled` and the scheduler's rebuild (the database is the
source of truth) parks it. The scheduler releases it into the stream when due and then marks
the record `published` with its offset.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Select, Table, select, update
from sqlalchemy.orm import Session

from api.dependencies import Scope
from api.services.formats import shown_payload
from broker.delays import DelaySet
from broker.outcomes import DeliveryOutcome
from models import ConsumptionRecord, MessageRecord, Subscription, Topic
from models.base import utcnow
from models.messages import CLOCK_SKEW
from mq.errors import Conflict, MessageNotFound
from mq.settings import Settings

#: Latest consumption record status -> the message's delivery status for that subscription.
DELIVERY_STATUS: dict[str, str] = {
    DeliveryOutcome.DELIVERED: "delivered", DeliveryOutcome.FAILED: "retrying",
    DeliveryOutcome.DEAD_LETTERED: "dead_letter", DeliveryOutcome.FILTERED: "filtered",
    DeliveryOutcome.EXPIRED: "expired"}


def find_message(session: Session, settings: Settings, tenant_id: str, message_id: str
                 ) -> tuple[MessageRecord, Topic]:
    """The message's newest record (a message id may be published again after 24 h) and
    its topic, or `MessageNotFound` once the message is past its topic's retention (capped
    by `MQ_RECORD_RETENTION_DAYS`), even while its day's partition is still kept."""
    now = utcnow()
    found = session.execute(newest_record(
        tenant_id, message_id, now, timedelta(days=settings.mq_record_retention_days))).first()
    if found is None or _past_retention(*found, now):
        raise MessageNotFound(message_id)
    return found[0], found[1]


def newest_record(tenant_id: str, message_id: str, now: datetime, kept: timedelta
                  ) -> Select[MessageRecord, Topic]:
    """The query of `find_message`: the partitions of the last `kept` days, newest first,
    each on `ix_message_records_tenant_message`; it stops at the first that holds the id."""
    return (select(MessageRecord, Topic)
            .join(Topic, Topic.id == MessageRecord.topic_id)
            .where(MessageRecord.tenant_id == tenant_id, MessageRecord.message_id == message_id,
                   MessageRecord.published_at > now - kept,
                   MessageRecord.published_at <= now + CLOCK_SKEW)
            .order_by(MessageRecord.published_at.desc()).limit(1))


def _past_retention(record: MessageRecord, topic: Topic, now: datetime) -> bool:
    """Whether the message is older than its topic keeps messages (a scheduled one is not:
    it has not been released yet)."""
    if record.status == "scheduled":
        return False
    return record.published_at <= now - timedelta(milliseconds=topic.retention_ms)


def message_view(here: Scope, record: MessageRecord, topic: Topic) -> dict[str, Any]:
    """A message with its status and per-subscription delivery state."""
    session = here.session
    deliveries = _deliveries(session, record)
    payload, headers = shown_payload(session, here.services.settings, record, topic)
    return {
        "message_id": record.message_id,
        "topic": topic.name,
        "partition": record.partition_id,
        "offset": _offset(here, record),
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


def cancel(session: Session, delays: DelaySet, record: MessageRecord) -> None:
    """Cancel a scheduled message; `Conflict` once it was released (or is not scheduled).

    The delay set decides: whoever removes the member first (this cancel, or the releaser's
    atomic move) wins. A `scheduled` record that is neither waiting nor recently released was
    lost by Redis and not yet rebuilt: cancelling it in the database is enough, as the
    rebuild re-checks the status of what it parks.
    """
    if record.status != "scheduled":
        raise Conflict(f"message '{record.message_id}' is {record.status}, not scheduled")
    if not delays.cancel(record.id) and delays.released_offsets([record.id]):
        raise Conflict(f"message '{record.message_id}' was released already")
    records = cast(Table, MessageRecord.__table__)
    done = cast(CursorResult[Any], session.execute(
        update(records).where(records.c.id == record.id,
                              records.c.published_at == record.published_at,
                              records.c.status == "scheduled")
        .values(status="cancelled")))
    session.commit()
    if done.rowcount != 1:
        raise Conflict(f"message '{record.message_id}' was released already")


def _offset(here: Scope, record: MessageRecord) -> str | None:
    """The record's stream offset; one just published may have it only in its append marker
    yet (the group writer writes offsets back with its next group)."""
    if record.offset_value is not None or record.status != "published":
        return record.offset_value
    refs = [(record.topic_id, record.partition_id, record.id)]
    return here.services.streams.appended_offsets(refs).get(record.id)


def _message_status(record: MessageRecord, deliveries: list[dict[str, Any]]) -> str:
    """`expired` once a published message's `ttl_ms` ran out before any delivery succeeded."""
    expired = record.expires_at is not None and record.expires_at <= utcnow()
    delivered = any(d["status"] == "delivered" for d in deliveries)
    if record.status == "published" and expired and not delivered:
        return "expired"
    return record.status


def _deliveries(session: Session, record: MessageRecord) -> list[dict[str, Any]]:
    """Per subscription of the topic: attempts, the last one's time and the status it left.
    Scans the delivery partitions from the publish's day on (`ix_consumption_records_message`
    in each); a message id published again after 24 h shares the attempts made since."""
    subscriptions = session.scalars(select(Subscription).where(
        Subscription.topic_id == record.topic_id, Subscription.tenant_id == record.tenant_id))
    attempts: dict[str, tuple[int, datetime, str]] = {}
    for subscription_id, status, at in session.execute(
            select(ConsumptionRecord.subscription_id, ConsumptionRecord.status,
                   ConsumptionRecord.consumed_at)
            .where(ConsumptionRecord.tenant_id == record.tenant_id,
                   ConsumptionRecord.message_id == record.message_id,
                   ConsumptionRecord.consumed_at >= record.published_at - CLOCK_SKEW)
            .order_by(ConsumptionRecord.consumed_at)):
        count = attempts[subscription_id][0] if subscription_id in attempts else 0
        attempts[subscription_id] = (count + 1, at, status)
    out = []
    for sub in subscriptions:
        count, last_at, status = attempts.get(sub.id, (0, None, ""))
        out.append({
            "subscription_id": sub.id,
            "consumer_group": sub.consumer_group,
            "status": DELIVERY_STATUS.get(status, "pending"),
            "attempts": count,
            "last_attempt_at": last_at,
        })
    return out
