"""Daily time partitions of the record tables, and what they hold.

`message_records` (by `published_at`) and `consumption_records` (by `consumed_at`) are
declaratively partitioned by range, one partition per UTC day, named `<table>_pYYYYMMDD`.
Partitions are created some days ahead (`ensure_partitions`: at every migration and by the
scheduler's storage job) and dropped whole once older than the retention (`drop_partition`:
a `DROP TABLE`, which takes the same few milliseconds whatever the day held, where a `DELETE`
would take minutes and leave the table to vacuum).

DDL here waits at most `LOCK_TIMEOUT` for its lock on the parent table: creating or dropping
a partition locks the parent, and a DDL statement queued behind a long query would hold up
every publish queued behind it. One that times out is tried again at the next run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

#: Partitioned tables and their partition keys.
PARTITIONED = {"message_records": "published_at", "consumption_records": "consumed_at"}
#: Days of partitions kept ready after today (a scheduler down for this long still leaves
#: room for every publish).
DAYS_AHEAD = 7
LOCK_TIMEOUT = "2s"
#: SQLSTATE check_violation, which PostgreSQL raises for a row no partition takes.
_CHECK_VIOLATION = "23514"

_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


@dataclass(frozen=True, order=True)
class Partition:
    """One day of one partitioned table."""

    day: date
    table: str

    @property
    def name(self) -> str:
        return partition_name(self.table, self.day)

    @property
    def start(self) -> datetime:
        return day_start(self.day)

    @property
    def end(self) -> datetime:
        return day_start(self.day + timedelta(days=1))


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def existing_partitions(connection: Connection, table: str) -> list[Partition]:
    """The table's daily partitions, oldest first."""
    names = connection.scalars(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:table AS regclass)"), {"table": table})
    found = []
    for name in names:
        match = _NAME.match(name)
        if match and match["table"] == table:
            found.append(Partition(datetime.strptime(match["day"], "%Y%m%d").date(), table))
    return sorted(found)


def ensure_partitions(connection: Connection, now: datetime, *, since: date | None = None,
                      days_ahead: int = DAYS_AHEAD, tables: Iterable[str] = tuple(PARTITIONED)
                      ) -> list[Partition]:
    """Create the missing partitions of the partitioned `tables` from `since` (default: the
    day of `now`) to `days_ahead` days after `now`; returns those created. Runs in the
    connection's transaction; the caller commits."""
    first = since or utc_day(now)
    last = utc_day(now) + timedelta(days=days_ahead)
    _serialise_ddl(connection)
    created = []
    for table in tables:
        have = {p.day for p in existing_partitions(connection, table)}
        for day in _days(first, last):
            if day not in have:
                created.append(_create(connection, Partition(day, table)))
    return created


def create_missing_partitions(engine: Engine, now: datetime) -> list[Partition]:
    """`ensure_partitions` in a transaction of its own, for a writer that found the day it
    writes to without its partition (nothing created partitions for `DAYS_AHEAD` days)."""
    with engine.begin() as connection:
        created = ensure_partitions(connection, now)
    if created:
        log.warning("created %d missing partitions (is the scheduler running?)", len(created))
    return created


def is_missing_partition(exc: BaseException) -> bool:
    """Whether a database error says a row's day has no partition."""
    original = getattr(exc, "orig", exc)
    return (getattr(original, "pgcode", None) == _CHECK_VIOLATION
            and "no partition of relation" in str(original))


def drop_partition(connection: Connection, partition: Partition) -> None:
    """Drop one day (in the connection's transaction; the caller commits)."""
    _serialise_ddl(connection)
    connection.execute(text(f'DROP TABLE IF EXISTS "{partition.name}"'))
    log.info("dropped partition %s (%s)", partition.name, partition.day.isoformat())


def holds_scheduled(connection: Connection, partition: Partition) -> int:
    """How many scheduled messages (not yet released) the message partition holds: they
    keep it until released (at most the 30 days a delay may last). Index-backed
    (`ix_message_records_scheduled`, partial on `status = 'scheduled'`)."""
    return int(connection.scalar(text(
        f"SELECT count(*) FROM \"{partition.name}\" WHERE status = 'scheduled'")) or 0)


@dataclass(frozen=True)
class TableStorage:
    """Rows (the planner's estimate) and bytes (with indexes and TOAST) of one table over
    all its partitions, and its oldest partition's day."""

    table: str
    rows: int
    bytes: int
    oldest_day: date | None


def storage(connection: Connection, tables: Iterable[str]) -> list[TableStorage]:
    """What each table holds, from the catalog alone (no table is scanned). Row counts are
    the estimates the last `ANALYZE` left (`analyze_partition`); a partitioned table's
    are its partitions' (an `ANALYZE` of the parent gives it an estimate of its own, which
    would count every row twice)."""
    out = []
    for table in tables:
        rows, size = connection.execute(text(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0), "
            "coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE (c.oid = CAST(:table AS regclass) AND c.relkind <> 'p') OR c.oid IN ("
            "  SELECT inhrelid FROM pg_inherits WHERE inhparent = CAST(:table AS regclass))"),
            {"table": table}).one()
        partitions = existing_partitions(connection, table) if table in PARTITIONED else []
        out.append(TableStorage(table, int(rows), int(size),
                                partitions[0].day if partitions else None))
    return out


def analyze_partition(connection: Connection, partition: Partition) -> None:
    """Refresh the partition's statistics (row estimate included); ANALYZE samples a fixed
    number of rows, so this costs the same for a day of a thousand or a million rows."""
    connection.execute(text(f'ANALYZE "{partition.name}"'))


def _create(connection: Connection, partition: Partition) -> Partition:
    connection.execute(text(
        f'CREATE TABLE IF NOT EXISTS "{partition.name}" PARTITION OF "{partition.table}" '
        f"FOR VALUES FROM ('{partition.start.isoformat()}') TO ('{partition.end.isoformat()}')"))
    log.info("created partition %s (%s)", partition.name, partition.day.isoformat())
    return partition


def _serialise_ddl(connection: Connection) -> None:
    """One partition DDL transaction at a time (two processes creating the same partition
    at once would otherwise collide in the catalog), waiting at most `LOCK_TIMEOUT` for
    the parent tables' locks."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('mq:partitions'))"))


def _days(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)
