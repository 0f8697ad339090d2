"""The storage job: what the database keeps stays bounded.

Every `STORAGE_S` (and at start) the scheduler
- creates the record tables' partitions of the coming days (`models.partitions`);
- drops whole days past their retention: message records after the longest `retention_ms`
  of any topic, at least `IDEMPOTENCY_WINDOW` (a duplicate's answer repeats its record) and
  at most `MQ_RECORD_RETENTION_DAYS`; delivery records after
  `MQ_DELIVERY_RECORD_RETENTION_DAYS`. A day of message records that still holds scheduled
  messages (delays last up to 30 days) is kept until they are released;
- deletes idempotency keys older than the window, in batches (`idempotency_keys`);
- refreshes the statistics of today's and yesterday's partitions (`ANALYZE`), which the
  storage gauges and the planner read.

Every step is idempotent and the DDL is serialised in the database, so two schedulers may
both run it. `GET /messages/{id}` hides a message past its own topic's retention at once
(`api.services.messages`); the day it lies in goes when every topic's retention has passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, text

from models import Database, Topic
from models.base import utcnow
from models.messages import IDEMPOTENCY_WINDOW
from models.partitions import (
    Partition,
    analyze_partition,
    drop_partition,
    ensure_partitions,
    existing_partitions,
    holds_scheduled,
    utc_day,
)
from mq.settings import Settings

log = logging.getLogger(__name__)

STORAGE_S = 3600.0
KEY_TRIM_BATCH = 50_000
_TRIM_KEYS = text(
    "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM idempotency_keys WHERE published_at <= :expired LIMIT :batch))")


@dataclass
class StorageReport:
    created: list[Partition] = field(default_factory=list)
    dropped: list[Partition] = field(default_factory=list)
    #: Days past their retention kept for the scheduled messages they hold.
    held: list[Partition] = field(default_factory=list)
    keys_deleted: int = 0


class RecordStorage:
    """The storage job of one scheduler (see the module docstring)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.database = database
        self.record_cap = timedelta(days=settings.mq_record_retention_days)
        self.delivery_retention = timedelta(days=settings.mq_delivery_record_retention_days)

    def run(self, now: datetime | None = None) -> StorageReport:
        """One pass; `now` is the clock the partitions are judged by."""
        now = now or utcnow()
        report = StorageReport()
        with self.database.engine.begin() as connection:
            report.created = ensure_partitions(connection, now)
            retention = {"message_records": self.record_retention(connection),
                         "consumption_records": self.delivery_retention}
        for table, kept in retention.items():
            self._drop_expired(table, now - kept, report)
        report.keys_deleted = self.trim_keys(now)
        self._analyze(now)
        return report

    def record_retention(self, connection: Connection) -> timedelta:
        longest = connection.scalar(select(func.max(Topic.retention_ms)))
        kept = timedelta(milliseconds=longest) if longest else self.record_cap
        return min(self.record_cap, max(IDEMPOTENCY_WINDOW, kept))

    def _drop_expired(self, table: str, cutoff: datetime, report: StorageReport) -> None:
        with self.database.engine.connect() as connection:
            expired = [p for p in existing_partitions(connection, table) if p.end <= cutoff]
        for partition in expired:
            with self.database.engine.begin() as connection:
                if table == "message_records":
                    waiting = holds_scheduled(connection, partition)
                    if waiting:
                        log.warning("partition %s is past its retention but holds %d "
                                    "scheduled messages: kept until they are released",
                                    partition.name, waiting)
                        report.held.append(partition)
                        continue
                drop_partition(connection, partition)
            report.dropped.append(partition)

    def trim_keys(self, now: datetime) -> int:
        """Delete the idempotency keys older than the window, a batch per transaction (each
        batch reads the table from its start, where the oldest keys are: an hour's keys
        expire between two runs)."""
        deleted = 0
        while True:
            with self.database.engine.begin() as connection:
                done = connection.execute(_TRIM_KEYS, {"expired": now - IDEMPOTENCY_WINDOW,
                                                       "batch": KEY_TRIM_BATCH}).rowcount
            deleted += done
            if done < KEY_TRIM_BATCH:
                break
        if deleted:
            log.info("deleted %d expired idempotency keys", deleted)
        return deleted

    def _analyze(self, now: datetime) -> None:
        days = {utc_day(now), utc_day(now - timedelta(days=1))}
        with self.database.engine.begin() as connection:
            for table in ("message_records", "consumption_records"):
                for partition in existing_partitions(connection, table):
                    if partition.day in days:
                        analyze_partition(connection, partition)
            connection.execute(text("ANALYZE idempotency_keys"))
