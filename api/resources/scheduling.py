"""Delayed, scheduled and recurring publishing: `/publish/delayed`, `/publish/scheduled`,
`/schedules`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from api.auth import PRODUCERS, principal, tenant_access
from api.context import scope, services
from api.fields import Timestamp, iso, strict_int
from api.message_body import MessageFields
from api.openapi import raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.responses import json_response
from api.services.publishing import admit, publish_at
from api.services.schedules import (
    check_deliver_at,
    create_schedule,
    find_schedule,
    schedule_views,
    stop_schedule,
)
from models import Schedule
from models.base import utcnow
from mq.errors import ValidationError

PREFIX = ""
blp = Blueprint("scheduling", __name__, description="Delayed, scheduled and recurring publishes")

MAX_DELAY_MS = 2_592_000_000


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

    #: Exactly one of `deliver_at` and `cron`; `timezone` and `name` only with `cron`.
    OPENAPI_EXTRA = {"oneOf": [
        {"required": ["deliver_at"], "not": {"anyOf": [
            {"required": ["cron"]}, {"required": ["timezone"]}, {"required": ["name"]}]}},
        {"required": ["cron"], "not": {"required": ["deliver_at"]}},
    ]}


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


ScheduleList = page_of(ScheduleOut, "ScheduleList")


def _publish_delayed(body: dict[str, Any], deliver_at: datetime) -> Response:
    here, caller = scope(), principal()
    topic = admit(here, caller, body["topic"], 1)
    result = publish_at(here, topic, caller, body, deliver_at)
    answer = {"message_id": result.message_id, "status": result.status,
              "deliver_at": iso(result.scheduled_at or result.published_at),
              "duplicate": result.duplicate}
    return json_response(answer, 200 if result.duplicate else 202)


def _create_schedule(body: dict[str, Any]) -> Response:
    schedule = create_schedule(scope(), principal(), body)
    return json_response({"schedule_id": schedule.id,
                          "next_run_at": iso(schedule.next_run_at)}, 201)


@blp.route("/publish/delayed")
class PublishDelayed(MethodView):
    @tenant_access(*PRODUCERS, publishes=True)
    @blp.arguments(DelayedBody())
    @raises(404, 409, 429)
    @blp.response(202, ScheduledOut)
    @blp.alt_response(200, schema=ScheduledOut, description="duplicate message_id")
    def post(self, body: dict[str, Any]) -> Response:
        """Publish one message after `delay_ms` (at most 30 days)."""
        delay = timedelta(milliseconds=body["delay_ms"])
        return _publish_delayed(body, utcnow() + delay)


@blp.route("/publish/scheduled")
class PublishScheduled(MethodView):
    @tenant_access(*PRODUCERS)
    @blp.arguments(ScheduledBody())
    @raises(404, 409, 429)
    @blp.response(202, ScheduledOut)
    @blp.alt_response(201, schema=ScheduleCreated, description="recurring (`cron` given)",
                      success=True)
    @blp.alt_response(200, schema=ScheduledOut, description="duplicate message_id")
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
        check_deliver_at(body["deliver_at"])
        return _publish_delayed(body, body["deliver_at"])


@blp.route("/schedules")
class Schedules(MethodView):
    @tenant_access(*PRODUCERS)
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ScheduleList)
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """The tenant's recurring schedules, oldest first."""
        session = scope().session
        stmt = select(Schedule).where(Schedule.tenant_id == principal().tenant_id)
        items, cursor = paginate(session, stmt, Schedule.created_at, Schedule.id,
                                 limit=page["limit"], cursor=page["cursor"])
        return {"items": schedule_views(session, items), "next_cursor": cursor}


@blp.route("/schedules/<schedule_id>")
class ScheduleById(MethodView):
    @tenant_access(*PRODUCERS)
    @blp.response(200, ScheduleOut)
    def get(self, schedule_id: str) -> dict[str, Any]:
        """One recurring schedule."""
        session = scope().session
        [view] = schedule_views(session, [find_schedule(session, principal().tenant_id,
                                                        schedule_id)])
        return view

    @tenant_access(*PRODUCERS)
    @blp.response(204)
    def delete(self, schedule_id: str) -> None:
        """Stop a recurring schedule (runs already published stay published; runs parked
        ahead of their time are cancelled)."""
        session = scope().session
        schedule = find_schedule(session, principal().tenant_id, schedule_id)
        stop_schedule(session, services().delays, schedule)
