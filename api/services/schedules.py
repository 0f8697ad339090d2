"""Recurring schedules: created from a publish body with `cron`, listed, read, stopped.

The scheduler process runs them (`scheduler`); each run is published as a message whose id
starts with the schedule's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.dependencies import Principal, Scope
from api.services.messages import cancel
from api.services.publishing import check_producer, prepare, publish_target, require_payload
from broker.delays import DelaySet
from models import MessageRecord, Schedule, Topic
from models.base import utcnow
from mq.cron import cron_trigger, next_run
from mq.errors import Conflict, ScheduleNotFound, ValidationError
from mq.tracing import with_trace

MAX_DELAY = timedelta(days=30)
#: Message fields of a schedule: everything of the body but the scheduling fields.
_NOT_MESSAGE = ("topic", "deliver_at", "cron", "timezone", "name")


def check_deliver_at(deliver_at: datetime) -> None:
    """A scheduled message may be due at most 30 days ahead."""
    if deliver_at - utcnow() > MAX_DELAY:
        raise ValidationError("deliver_at is more than 30 days ahead",
                              {"deliver_at": ["at most 30 days ahead"]})


def create_schedule(here: Scope, caller: Principal, body: dict[str, Any]) -> Schedule:
    """A recurring schedule of the message in `body`, checked as it would be at publish time."""
    require_payload(body)
    timezone = body.get("timezone") or "UTC"
    trigger = cron_trigger(body["cron"], timezone)
    first = next_run(trigger, utcnow())
    if first is None:
        raise ValidationError("the cron expression never fires",
                              {"cron": ["no future run time"]})
    topic = publish_target(here, caller.tenant_id, body["topic"])
    check_producer(topic, caller)
    message = with_trace({k: v for k, v in body.items() if k not in _NOT_MESSAGE}, here.trace)
    prepare(here, topic, caller, message)  # schema, size and partition checks, as at publish
    schedule = Schedule(tenant_id=topic.tenant_id, topic_id=topic.id, name=body.get("name"),
                        cron=" ".join(body["cron"].split()), timezone=timezone,
                        message=message, next_run_at=first)
    here.session.add(schedule)
    here.session.commit()
    return schedule


def find_schedule(session: Session, tenant_id: str, schedule_id: str) -> Schedule:
    schedule = session.scalar(select(Schedule).where(
        Schedule.tenant_id == tenant_id, Schedule.id == schedule_id))
    if schedule is None:
        raise ScheduleNotFound(schedule_id)
    return schedule


def stop_schedule(session: Session, delays: DelaySet, schedule: Schedule) -> None:
    """Delete the schedule; runs already published stay published, runs parked ahead of
    their time are cancelled."""
    session.delete(schedule)
    session.commit()
    parked = session.scalars(select(MessageRecord).where(
        MessageRecord.tenant_id == schedule.tenant_id,
        MessageRecord.message_id.startswith(f"{schedule.id}:", autoescape=True),
        MessageRecord.status == "scheduled")).all()
    for record in parked:
        with contextlib.suppress(Conflict):  # released meanwhile
            cancel(session, delays, record)


def schedule_views(session: Session, schedules: Iterable[Schedule]) -> list[dict[str, Any]]:
    """Schedules as answered, each naming its topic."""
    schedules = list(schedules)
    names = _topic_names(session, {s.topic_id for s in schedules})
    return [_schedule_view(s, names) for s in schedules]


def _topic_names(session: Session, topic_ids: set[str]) -> dict[str, str]:
    if not topic_ids:
        return {}
    rows = session.execute(select(Topic.id, Topic.name).where(Topic.id.in_(topic_ids)))
    return {topic_id: name for topic_id, name in rows}


def _schedule_view(schedule: Schedule, topic_names: dict[str, str]) -> dict[str, Any]:
    return {"id": schedule.id, "name": schedule.name,
            "topic": topic_names.get(schedule.topic_id), "cron": schedule.cron,
            "timezone": schedule.timezone, "next_run_at": schedule.next_run_at,
            "last_run_at": schedule.last_run_at, "created_at": schedule.created_at,
            "message": schedule.message}
