"""Delayed and scheduled publishing: a record now, the stream entry when it is due.

Order of the writes, as for immediate publishes (see `api.publishing`): the record is
COMMITted first with status `scheduled`, then the message is parked in the delay set
(`broker.delays`); `202` is answered only after both. If Redis refuses the park, the record
is deleted again and the client gets `503`; should that delete fail too, the record stays
`scheduled` and the scheduler's rebuild (the database is the source of truth) parks it.
The scheduler releases it into the stream when due and then marks the record `published`
with its offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import Principal
from api.publishing import PublishTarget, check_producer, forget_records, prepare_message
from broker.delays import DelaySet
from models import MessageRecord
from mq.errors import Conflict

MAX_DELAY = timedelta(days=30)


@dataclass(frozen=True)
class Scheduled:
    message_id: str
    status: str
    deliver_at: datetime
    duplicate: bool


def publish_at(session: Session, delays: DelaySet, topic: PublishTarget, caller: Principal,
               message: dict[str, Any], deliver_at: datetime) -> Scheduled:
    """Record `message` as scheduled for `deliver_at` and park it (see module docstring)."""
    check_producer(topic, caller)
    prepared = prepare_message(topic, caller, message, None)
    if message.get("message_id"):
        known = _existing(session, topic.tenant_id, prepared.message_id)
        if known is not None:
            return known
    now = prepared.row["published_at"]
    deliver_at = max(deliver_at, now)
    due_ms = int(deliver_at.timestamp() * 1000)
    ttl = message.get("ttl_ms")
    expires_at = deliver_at + timedelta(milliseconds=ttl) if ttl else None
    prepared.row.update(status="scheduled", scheduled_at=deliver_at, expires_at=expires_at)
    envelope = replace(prepared.envelope, published_ms=due_ms,
                       expires_ms=int(expires_at.timestamp() * 1000) if expires_at else None)
    try:
        session.execute(insert(MessageRecord.__table__), [prepared.row])
        session.commit()
    except IntegrityError:
        session.rollback()
        known = _existing(session, topic.tenant_id, prepared.message_id)
        if known is None:
            raise Conflict("a concurrent request published this message id; retry") from None
        return known
    try:
        delays.park(prepared.row["id"], due_ms, topic.id, prepared.row["partition_id"], envelope)
    except RedisError:
        forget_records(session, [prepared.row["id"]])
        raise
    return Scheduled(prepared.message_id, "scheduled", deliver_at, duplicate=False)


def _existing(session: Session, tenant_id: str, message_id: str) -> Scheduled | None:
    row = session.execute(
        select(MessageRecord.status, MessageRecord.scheduled_at, MessageRecord.published_at)
        .where(MessageRecord.tenant_id == tenant_id, MessageRecord.message_id == message_id)
    ).first()
    if row is None:
        return None
    return Scheduled(message_id, row.status, row.scheduled_at or row.published_at,
                     duplicate=True)


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
    records = MessageRecord.__table__
    done = session.execute(
        update(records).where(records.c.id == record.id, records.c.status == "scheduled")
        .values(status="cancelled"))
    session.commit()
    if done.rowcount != 1:
        raise Conflict(f"message '{record.message_id}' was released already")
