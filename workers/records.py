"""Worker-side records, written in batches off the delivery hot path.

Worker threads only append to an in-memory queue; one background thread writes every
`FLUSH_S` (or at `BATCH_ROWS` rows): consumption records (one per attempt), the message records
of dead letters published on dead-letter topics, and each subscription's `last_consumed_at`.
A batch that fails (database down) is kept and retried, up to `MAX_BACKLOG` rows; rows of
subscriptions deleted meanwhile are dropped.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from models import ConsumptionRecord, Database, MessageRecord, Subscription

log = logging.getLogger(__name__)

FLUSH_S = 0.2
BATCH_ROWS = 500
MAX_BACKLOG = 100_000


def fast_id() -> str:
    """A random (version 4) UUID for a record's primary key, without a system call per id
    (`uuid4` reads the OS entropy pool each time, which showed in profiles of busy workers)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


class RecordWriter:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._backlog: list[tuple[str, dict[str, Any]]] = []

    def start(self) -> None:
        self._thread.start()

    def consumption(self, **row: Any) -> None:
        row.setdefault("id", fast_id())
        self._queue.put(("consumption", row))

    def message(self, **row: Any) -> None:
        row.setdefault("id", fast_id())
        self._queue.put(("message", row))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            deadline = time.monotonic() + FLUSH_S
            batch = self._backlog
            while len(batch) < BATCH_ROWS:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            self._backlog = self._write(batch) if batch else []
            if stopping and self._queue.empty():
                return

    def _write(self, batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        consumptions = [row for kind, row in batch if kind == "consumption"]
        messages = [row for kind, row in batch if kind == "message"]
        try:
            with self.database.session() as session:
                if consumptions:
                    consumptions = self._existing_subscriptions(session, consumptions)
                if consumptions:
                    session.execute(insert(ConsumptionRecord.__table__), consumptions)
                    session.execute(_SET_LAST_CONSUMED, _last_consumed(consumptions))
                if messages:
                    session.execute(insert(MessageRecord.__table__), messages)
                session.commit()
            return []
        except IntegrityError:
            log.exception("dropping a batch of %d records that no longer fit", len(batch))
            return []
        except SQLAlchemyError:
            log.warning("writing %d records failed; will retry", len(batch), exc_info=True)
            time.sleep(1)
            return batch[-MAX_BACKLOG:]

    @staticmethod
    def _existing_subscriptions(session: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = {row["subscription_id"] for row in rows}
        alive = set(session.scalars(select(Subscription.id).where(Subscription.id.in_(ids))))
        return [row for row in rows if row["subscription_id"] in alive]


_SUBSCRIPTIONS = Subscription.__table__
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
