"""Delayed, scheduled and recurring publishing: `/publish/delayed`, `/publish/scheduled`,
`/schedules`."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from flask import Response, current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import principal, tenant_access
from api.delayed import MAX_DELAY, cancel
from api.fields import Timestamp, iso, strict_int
from api.pagination import PageArgs, paginate
from api.parsing import Blueprint
from api.publish import MessageFields, json_response, publish_target
from api.publishing import check_producer, prepare, publish_at
from api.quotas import check_stored_bytes, take_publish_rate
from api.services import services
from broker.delays import DelaySet
from models import MessageRecord, Schedule, Topic
from models.base import utcnow
from mq.cron import cron_trigger, next_run
from mq.errors import Conflict, ScheduleNotFound, ValidationError

PREFIX = ""
blp = Blueprint("scheduling", __name__, description="Delayed, scheduled and recurring publishes")

MAX_DELAY_MS = 2_592_000_000
#: Message fields of a schedule: everything of the body but the scheduling fields.
_NOT_MESSAGE = ("topic", "deliver_at", "cron", "timezone", "name")


class DelayedBody(MessageFields):
    topic = fields.String(required=True, validate=validate.Length(1, 400))
    delay_ms = strict_int(1, MAX_DELAY_MS, required=True)


class ScheduledBody(MessageFields):
    """`deliver_at` for one delayed message, or `cron` (+ `timezone`, `name`) for a schedule."""

    topic = fields.String(required=True, validate=validate.Length(1, 400))
    deliver_at = Timestamp()
    cron = fields.String(validate=validate.Length(1, 120))
    timezone = fields.String(validate=validate.Length(1, 64))
    name = fields.String(allow_none=True, validate=validate.Length(max=200))


class ScheduledOut(Schema):
    message_id = fields.String()
    status = fields.String()
    deliver_at = Timestamp()
    duplicate = fields.Boolean()


class ScheduleCreated(Schema):
    schedule_id = fields.String()
    next_run_at = Timestamp(allow_none=True)


class ScheduleOut(Schema):
    id = fields.String()
    name = fields.String(allow_none=True)
    topic = fields.String()
    cron = fields.String()
    timezone = fields.String()
    next_run_at = Timestamp(allow_none=True)
    last_run_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    message = fields.Dict()


class ScheduleList(Schema):
    items = fields.List(fields.Nested(ScheduleOut))
    next_cursor = fields.String(allow_none=True)


def delay_set() -> DelaySet:
    """The API process's delay set (its scripts registered once)."""
    found = current_app.extensions.get("mq_delays")
    if found is None:
        svc = services()
        found = DelaySet(svc.redis, svc.keys, stream_cap=svc.settings.stream_max_len)
        current_app.extensions["mq_delays"] = found
    return found


def _publish_delayed(body: dict[str, Any], deliver_at: datetime) -> Response:
    topic = publish_target(body["topic"])
    take_publish_rate(topic.tenant_id, 1)
    check_stored_bytes(topic.tenant_id)
    result = publish_at(topic, principal(), body, deliver_at)
    answer = {"message_id": result.message_id, "status": result.status,
              "deliver_at": iso(result.scheduled_at or result.published_at),
              "duplicate": result.duplicate}
    return json_response(answer, 200 if result.duplicate else 202)


def _create_schedule(body: dict[str, Any]) -> Response:
    if "payload" not in body:
        raise ValidationError("payload is required",
                              {"payload": ["Missing data for required field."]})
    timezone = body.get("timezone") or "UTC"
    trigger = cron_trigger(body["cron"], timezone)
    first = next_run(trigger, utcnow())
    if first is None:
        raise ValidationError("the cron expression never fires",
                              {"cron": ["no future run time"]})
    topic, caller = publish_target(body["topic"]), principal()
    check_producer(topic, caller)
    message = {k: v for k, v in body.items() if k not in _NOT_MESSAGE}
    prepare(topic, caller, message)  # schema, size and partition checks, as at publish time
    session = services().db_session()
    schedule = Schedule(tenant_id=topic.tenant_id, topic_id=topic.id, name=body.get("name"),
                        cron=" ".join(body["cron"].split()), timezone=timezone,
                        message=message, next_run_at=first)
    session.add(schedule)
    session.commit()
    return json_response({"schedule_id": schedule.id, "next_run_at": iso(first)}, 201)


@blp.route("/publish/delayed")
class PublishDelayed(MethodView):
    @tenant_access("admin", "producer", publishes=True)
    @blp.arguments(DelayedBody())
    @blp.response(202, ScheduledOut)
    @blp.alt_response(200, schema=ScheduledOut, description="duplicate message_id")
    @blp.doc(security=[{"bearer": []}])
    def post(self, body: dict[str, Any]) -> Response:
        """Publish one message after `delay_ms` (at most 30 days)."""
        delay = timedelta(milliseconds=body["delay_ms"])
        return _publish_delayed(body, utcnow() + delay)


@blp.route("/publish/scheduled")
class PublishScheduled(MethodView):
    @tenant_access("admin", "producer")
    @blp.arguments(ScheduledBody())
    @blp.response(202, ScheduledOut)
    @blp.alt_response(201, schema=ScheduleCreated, description="recurring (`cron` given)",
                      success=True)
    @blp.alt_response(200, schema=ScheduledOut, description="duplicate message_id")
    @blp.doc(security=[{"bearer": []}])
    def post(self, body: dict[str, Any]) -> Response:
        """Publish one message at `deliver_at`, or create a recurring schedule with `cron`."""
        if ("deliver_at" in body) == ("cron" in body):
            raise ValidationError("give either deliver_at or cron", {
                "deliver_at": ["exactly one of deliver_at and cron"],
                "cron": ["exactly one of deliver_at and cron"]})
        if "cron" in body:
            return _create_schedule(body)
        extra = [name for name in ("timezone", "name") if name in body]
        if extra:
            raise ValidationError("only a cron schedule takes these fields",
                                  {name: ["only with cron"] for name in extra})
        deliver_at = body["deliver_at"]
        if deliver_at - utcnow() > MAX_DELAY:
            raise ValidationError("deliver_at is more than 30 days ahead",
                                  {"deliver_at": ["at most 30 days ahead"]})
        return _publish_delayed(body, deliver_at)


@blp.route("/schedules")
class Schedules(MethodView):
    @tenant_access("admin", "producer")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ScheduleList)
    @blp.doc(security=[{"bearer": []}])
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """The tenant's recurring schedules, oldest first."""
        session = services().db_session()
        stmt = select(Schedule).where(Schedule.tenant_id == principal().tenant_id)
        items, cursor = paginate(session, stmt, Schedule.created_at, Schedule.id,
                                 limit=page["limit"], cursor=page["cursor"])
        names = _topic_names(session, {s.topic_id for s in items})
        return {"items": [_schedule_out(s, names) for s in items], "next_cursor": cursor}


@blp.route("/schedules/<schedule_id>")
class ScheduleById(MethodView):
    @tenant_access("admin", "producer")
    @blp.response(200, ScheduleOut)
    @blp.doc(security=[{"bearer": []}])
    def get(self, schedule_id: str) -> dict[str, Any]:
        """One recurring schedule."""
        session = services().db_session()
        schedule = _find_schedule(session, schedule_id)
        return _schedule_out(schedule, _topic_names(session, {schedule.topic_id}))

    @tenant_access("admin", "producer")
    @blp.response(204)
    @blp.doc(security=[{"bearer": []}])
    def delete(self, schedule_id: str) -> None:
        """Stop a recurring schedule (runs already published stay published; runs parked
        ahead of their time are cancelled)."""
        session = services().db_session()
        schedule = _find_schedule(session, schedule_id)
        session.delete(schedule)
        session.commit()
        _cancel_parked_runs(session, schedule)


def _cancel_parked_runs(session: Session, schedule: Schedule) -> None:
    parked = session.scalars(select(MessageRecord).where(
        MessageRecord.tenant_id == schedule.tenant_id,
        MessageRecord.message_id.startswith(f"{schedule.id}:", autoescape=True),
        MessageRecord.status == "scheduled")).all()
    for record in parked:
        with contextlib.suppress(Conflict):  # released meanwhile
            cancel(session, delay_set(), record)


def _find_schedule(session: Session, schedule_id: str) -> Schedule:
    schedule = session.scalar(select(Schedule).where(
        Schedule.tenant_id == principal().tenant_id, Schedule.id == schedule_id))
    if schedule is None:
        raise ScheduleNotFound(schedule_id)
    return schedule


def _topic_names(session: Session, topic_ids: set[str]) -> dict[str, str]:
    if not topic_ids:
        return {}
    rows = session.execute(select(Topic.id, Topic.name).where(Topic.id.in_(topic_ids)))
    return {topic_id: name for topic_id, name in rows}


def _schedule_out(schedule: Schedule, topic_names: dict[str, str]) -> dict[str, Any]:
    return {"id": schedule.id, "name": schedule.name,
            "topic": topic_names.get(schedule.topic_id), "cron": schedule.cron,
            "timezone": schedule.timezone, "next_run_at": schedule.next_run_at,
            "last_run_at": schedule.last_run_at, "created_at": schedule.created_at,
            "message": schedule.message}
