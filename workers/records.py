"""Worker-side records, written in batches off the delivery hot path.

Worker threads only append rows to a list: consumption records (one per attempt), the message
records of dead letters published on dead-letter topics, and (from the former) each
subscription's `last_consumed_at`. A sender thread hands the list every `SEND_S` to a writer
*process* forked at start, which stores them every `FLUSH_S` (or `BATCH_ROWS` rows): with the
database work outside the worker process, it never competes for that process's interpreter
lock with the deliveries (measured: it tripled the p99 delivery latency when it ran in a
thread). A batch that fails (database down) is kept and retried, up to `MAX_BACKLOG` rows;
rows of subscriptions deleted meanwhile are dropped. The writer exits once it has stored
everything after the worker stops, or when the worker process is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from models import ConsumptionRecord, Database, MessageRecord, Subscription
from models.base import fast_id, utcnow
from models.bulk import copy_rows
from models.partitions import create_missing_partitions, is_missing_partition
from mq.logging import RepeatedFailures

log = logging.getLogger(__name__)

SEND_S = 0.1
FLUSH_S = 0.2
BATCH_ROWS = 500
MAX_BACKLOG = 100_000
FORK = multiprocessing.get_context("fork")

Row = tuple[str, dict[str, Any]]


class RecordWriter:
    """The worker side: collects rows and sends them to the writer process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._rows: list[Row] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="record-sender",
                                        daemon=True)
        self._process: Any = None
        self._pipe: Connection | None = None

    def start(self) -> None:
        self._spawn()
        self._sender.start()

    def consumption(self, **row: Any) -> None:
        row.setdefault("id", fast_id())
        with self._lock:
            self._rows.append(("consumption", row))

    def message(self, **row: Any) -> None:
        row.setdefault("id", fast_id())
        with self._lock:
            self._rows.append(("message", row))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._sender.join(timeout)
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()

    def _spawn(self) -> None:
        receiver, sender = FORK.Pipe(duplex=False)
        self._process = FORK.Process(target=_writer_main, name="mq-record-writer", daemon=True,
                                     args=(self.database_url, receiver, os.getpid()))
        self._process.start()
        receiver.close()
        self._pipe = sender

    def _send_loop(self) -> None:
        while True:
            stopping = self._stop.wait(SEND_S)
            with self._lock:
                batch, self._rows = self._rows, []
            if batch:
                self._send(batch)
            if stopping:
                self._send(None)
                return

    def _send(self, batch: list[Row] | None) -> None:
        for _ in range(2):
            try:
                assert self._pipe is not None
                self._pipe.send(batch)
                return
            except (OSError, EOFError, AssertionError):
                log.warning("record writer process gone; starting a new one")
                self._spawn()
        log.error("dropping %d records: no writer process", len(batch or []))


def _writer_main(database_url: str, pipe: Connection, parent_pid: int) -> None:
    """The writer process: receive rows, store them in batches, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when this one stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    database = Database(database_url, pool_size=1)
    failures = RepeatedFailures(log, outages=(SQLAlchemyError,))
    backlog: list[Row] = []
    flushed = time.monotonic()
    done = False
    while not done:
        if pipe.poll(FLUSH_S):
            try:
                batch = pipe.recv()
            except EOFError:
                batch = None
            if batch is None:
                done = True
            else:
                backlog.extend(batch)
        done = done or os.getppid() != parent_pid
        if backlog and (done or len(backlog) >= BATCH_ROWS
                        or time.monotonic() - flushed >= FLUSH_S):
            backlog = write_batch(database, backlog, failures)
            flushed = time.monotonic()
    if backlog:
        write_batch(database, backlog, failures)
    database.dispose()


def write_batch(database: Database, batch: list[Row], failures: RepeatedFailures
                ) -> list[Row]:
    """Store `batch`; returns what must be tried again (nothing, unless the database failed:
    then the failure is logged the way an outage should be, once and then with a count)."""
    if failures.run("writing delivery records", lambda: _store(database, batch)):
        return []
    time.sleep(1)
    return batch[-MAX_BACKLOG:]


def _store(database: Database, batch: list[Row]) -> None:
    try:
        _store_once(database, batch)
    except IntegrityError as exc:
        if not is_missing_partition(exc):
            raise
        create_missing_partitions(database.engine, utcnow())
        _store_once(database, batch)


def _store_once(database: Database, batch: list[Row]) -> None:
    consumptions = [row for kind, row in batch if kind == "consumption"]
    messages = [row for kind, row in batch if kind == "message"]
    try:
        with database.session() as session:
            if consumptions:
                consumptions = _existing_subscriptions(session, consumptions)
            if consumptions:
                copy_rows(session, _CONSUMPTIONS, consumptions)
                session.execute(_SET_LAST_CONSUMED, _last_consumed(consumptions))
            if messages:
                session.execute(insert(_MESSAGES), messages)
            session.commit()
    except IntegrityError as exc:  # retrying cannot help, but for a day without its partition
        if is_missing_partition(exc):
            raise
        log.exception("dropping a batch of %d records that no longer fit", len(batch))


def _existing_subscriptions(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {row["subscription_id"] for row in rows}
    alive = set(session.scalars(select(Subscription.id).where(Subscription.id.in_(ids))))
    return [row for row in rows if row["subscription_id"] in alive]


# Declarative models' tables, typed as the tables they are (SQLAlchemy types `__table__`
# as any FROM clause).
_CONSUMPTIONS = cast(Table, ConsumptionRecord.__table__)
_MESSAGES = cast(Table, MessageRecord.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
# `updated_at` is set to itself: recording a delivery is not a change of the subscription.
_SET_LAST_CONSUMED = (
    update(_SUBSCRIPTIONS)
    .where(_SUBSCRIPTIONS.c.id == bindparam("sid"))
    .values(last_consumed_at=bindparam("at"), updated_at=_SUBSCRIPTIONS.c.updated_at)
)


def _last_consumed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, datetime] = {}
    for row in rows:
        at = row["consumed_at"]
        if row["subscription_id"] not in latest or at > latest[row["subscription_id"]]:
            latest[row["subscription_id"]] = at
    return [{"sid": sid, "at": at} for sid, at in latest.items()]
