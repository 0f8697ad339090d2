"""Cron expressions of recurring schedules: 5 fields, or 6 with seconds first, in an IANA zone.

APScheduler's `CronTrigger` computes the run times. Weekday numbers follow crontab (0 and 7 =
Sunday, 1 = Monday), not APScheduler (0 = Monday): numeric weekday items are translated to
day names before they reach the trigger; names (`mon`-`sun`) mean the same in both.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from mq.errors import ValidationError

FIELDS_5 = ("minute", "hour", "day", "month", "day_of_week")
FIELDS_6 = ("second", *FIELDS_5)
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC_DAYS = re.compile(r"\*|(\d+)(?:-(\d+))?")


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
    fields["day_of_week"] = crontab_weekdays(fields["day_of_week"])
    try:
        return CronTrigger(timezone=zone, **fields)
    except (ValueError, TypeError) as exc:
        raise ValidationError("invalid cron expression", {"cron": [str(exc)]}) from exc


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field with every numeric item spelled as day names."""
    days: list[str] = []
    for item in field.split(","):
        base, _, step = item.partition("/")
        match = _NUMERIC_DAYS.fullmatch(base)
        if match is None or (base == "*" and not step):
            days.append(item)
            continue
        low, high = (0, 6) if base == "*" else (int(match[1]), int(match[2] or match[1]))
        if step:
            high = 6 if base == "*" or not match[2] else high
        if not (0 <= low <= high <= 7) or (step and not step.isdigit()) or step == "0":
            raise ValidationError("invalid cron expression",
                                  {"cron": [f"weekday item '{item}': days are 0-7 (0 and 7 = "
                                            "Sunday)"]})
        days.extend(DAY_NAMES[day % 7] for day in range(low, high + 1, int(step or 1)))
    return ",".join(dict.fromkeys(days))


def next_run(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first run strictly after `after` (missed runs before it are skipped: coalesced).
    APScheduler answers the first run at or after its `now`: a run at exactly `after` (a run
    fired ahead of its time, `after` being that run) would come back as its own successor."""
    return trigger.get_next_fire_time(None, after + timedelta(microseconds=1))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError("invalid timezone",
                              {"timezone": [f"'{name}' is not an IANA time zone"]}) from exc
