"""Cron expressions follow crontab's weekday numbering (0 and 7 = Sunday)."""

from datetime import UTC, datetime

import pytest

from mq.cron import cron_trigger, crontab_weekdays, next_run
from mq.errors import ValidationError

FRIDAY = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("field", "days"), [
    ("*", "*"),
    ("0", "sun"),
    ("7", "sun"),
    ("1", "mon"),
    ("1-5", "mon,tue,wed,thu,fri"),
    ("0-2", "sun,mon,tue"),
    ("*/2", "sun,tue,thu,sat"),
    ("1,3,5", "mon,wed,fri"),
    ("mon-fri", "mon-fri"),
    ("5-7", "fri,sat,sun"),
])
def test_numeric_weekdays_are_crontab_days(field, days):
    assert crontab_weekdays(field) == days


def test_monday_means_monday():
    trigger = cron_trigger("0 9 * * 1")
    assert trigger.get_next_fire_time(None, FRIDAY) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_sunday_as_zero_and_seven():
    sunday = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    for expression in ("0 9 * * 0", "0 9 * * 7"):
        assert cron_trigger(expression).get_next_fire_time(None, FRIDAY) == sunday


@pytest.mark.parametrize("field", ["8", "3-1", "*/0", "1-9"])
def test_out_of_range_weekdays_are_422(field):
    with pytest.raises(ValidationError) as raised:
        cron_trigger(f"0 9 * * {field}")
    assert "cron" in raised.value.details


def test_next_run_is_strictly_after_even_at_a_run_time():
    """A run fired ahead of its time asks for its successor with itself as `after`."""
    trigger = cron_trigger("*/1 * * * * *", "UTC")
    run = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert next_run(trigger, run) == datetime(2026, 1, 1, 0, 0, 6, tzinfo=UTC)
    assert next_run(trigger, run.replace(microsecond=300)) == \
        datetime(2026, 1, 1, 0, 0, 6, tzinfo=UTC)
