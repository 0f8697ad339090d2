"""Cron expressions of recurring schedules: 5 fields, or 6 with seconds first, in an IANA zone.

APScheduler's `CronTrigger` computes the run times. Fields are passed to it as written, so
weekday numbers follow APScheduler (0 = Monday); names (`mon`-`sun`) mean the same in both.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from mq.errors import ValidationError

FIELDS_5 = ("minute", "hour", "day", "month", "day_of_week")
FIELDS_6 = ("second", *FIELDS_5)


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """The trigger of `expression` in `timezone`; `ValidationError` names the bad field."""
    zone = _zone(timezone)
    parts = expression.split()
    if len(parts) not in (5, 6):
        raise ValidationError("invalid cron expression",
                              {"cron": ["5 fields (minute hour day month weekday), or 6 with "
                                        "seconds first"]})
    names = FIELDS_6 if len(parts) == 6 else FIELDS_5
    fields = dict(zip(names, parts, strict=True))
    fields.setdefault("second", "0")
    try:
        return CronTrigger(timezone=zone, **fields)
    except (ValueError, TypeError) as exc:
        raise ValidationError("invalid cron expression", {"cron": [str(exc)]}) from exc


def next_run(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first run strictly after `after` (missed runs before it are skipped: coalesced)."""
    return trigger.get_next_fire_time(None, after)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError("invalid timezone",
                              {"timezone": [f"'{name}' is not an IANA time zone"]}) from exc
