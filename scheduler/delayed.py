"""Releasing delayed messages, and rebuilding the delay set from the database.

The releaser is a thread of its own rather than an interval job: a fixed tick would make every
message up to a tick late. It runs the atomic release script (`broker.delays`), which also
answers the earliest due time still waiting, then sleeps until exactly that time on the
wake-up channel, which the API publishes on when it parks a message due earlier than everything
else. Two schedulers may both run it: the script moves each message once.

After the move the releaser marks the records `published` with their offsets. A crash between
the two leaves a `scheduled` record whose message is in the stream; the release markers
(kept an hour) let the rebuild finish the update instead of parking the message again. Only
if Redis loses the markers too would the rebuild publish such a message a second time
(at-least-once, never lost).

The rebuild (at start and every `REBUILD_S`, under a Redis lease so that one scheduler does
it at a time) parks again every `scheduled` record that is neither waiting nor released: the
database is the source of truth, and Redis may lose the set. It also drops waiting messages
whose record is gone (their topic or tenant was deleted). While another scheduler holds the
lease the rebuild is tried again every second, so one that died mid-rebuild holds a restarted
scheduler up for `REBUILD_LEASE_MS` at most.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from typing import cast

from redis.exceptions import RedisError
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from broker.connection import RedisClient, connect
from broker.delays import DelaySet
from broker.heartbeats import Lease
from broker.keys import Keys
from formats.encryption import cached_keyring
from models import Database, MessageRecord
from models.base import utcnow
from mq.settings import Settings
from mq.tracing import Tracing
from publishing.group import Publisher
from scheduler.housekeeping import Housekeeping
from scheduler.records import due_ms, record_envelope
from scheduler.recurring import Recurring

log = logging.getLogger(__name__)

MAX_SLEEP_MS = 1000
REBUILD_S = 30.0
HOUSEKEEPING_S = 60.0
REBUILD_LEASE_MS = 10_000  # renewed after every page
REBUILD_RETRY_S = 1.0
REBUILD_PAGE = 1000


def mark_published(database: Database, offsets: dict[str, str]) -> None:
    """Records released into the stream become `published` with their offsets, updated in
    the order of their ids: the releaser and the rebuild may mark the same records at once,
    and two transactions locking them in different orders deadlock. By id alone, each day's
    partition is probed on `ix_message_records_scheduled` (partial: scheduled records only);
    a record whose release falls on a later day moves to that day's partition."""
    if not offsets:
        return
    records = cast(Table, MessageRecord.__table__)  # SQLAlchemy types it as any FROM clause
    with database.session() as session:
        session.execute(
            update(records)
            .where(records.c.id == bindparam("record_id"), records.c.status == "scheduled")
            .values(status="published", offset_value=bindparam("offset"),
                    published_at=bindparam("at")),
            [{"record_id": rid, "offset": off, "at": utcnow()}
             for rid, off in sorted(offsets.items())],
        )
        session.commit()


class Releaser(threading.Thread):
    """Releases due messages at their due time (see the module docstring)."""

    def __init__(self, settings: Settings, database: Database, stop: threading.Event) -> None:
        super().__init__(name="delay-releaser", daemon=True)
        self.redis = connect(settings, max_connections=2)
        self.delays = DelaySet(self.redis, Keys.of(settings),
                               stream_cap=settings.stream_max_len)
        self.database = database
        self.stop = stop
        self.to_record: queue.Queue[dict[str, str]] = queue.Queue()
        self.recorder = threading.Thread(target=self._record, name="delay-recorder",
                                         daemon=True)

    def run(self) -> None:
        self.recorder.start()
        pubsub = None
        while not self.stop.is_set():
            try:
                pubsub = pubsub or self.delays.subscribe()
                sleep_ms = self.release_once()
                if sleep_ms > 0:
                    self.delays.wait(pubsub, sleep_ms)
            except (RedisError, SQLAlchemyError, OSError):
                log.exception("releasing delayed messages failed; retrying in 1 s")
                pubsub = None
                self.stop.wait(1.0)

    def release_once(self) -> int:
        """Release what is due; returns how long to sleep (ms) until the next due time."""
        released = self.delays.release()
        if released.offsets:
            log.debug("released %d delayed messages", len(released.offsets))
            self.to_record.put(released.offsets)
        if released.next_due_ms is None:
            return MAX_SLEEP_MS
        return min(MAX_SLEEP_MS, max(0, released.next_due_ms - released.now_ms))

    def _record(self) -> None:
        """Mark released records `published`, in batches, off the release loop (a database
        round trip there would make every message due meanwhile that much later). What is
        not recorded when the process stops is finished by the rebuild from the markers."""
        while not (self.stop.is_set() and self.to_record.empty()):
            try:
                batch = self.to_record.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self.to_record.empty() and len(batch) < 1000:
                batch.update(self.to_record.get_nowait())
            try:
                mark_published(self.database, batch)
            except SQLAlchemyError:
                log.exception("recording %d released messages failed (the rebuild finishes it)",
                              len(batch))


class Rebuilder:
    """Parks `scheduled` records that Redis does not hold (see the module docstring)."""

    def __init__(self, redis: RedisClient, keys: Keys, database: Database, delays: DelaySet
                 ) -> None:
        self.redis = redis
        self.keys = keys
        self.database = database
        self.delays = delays
        self.lease = Lease(redis, keys.lock("delay-rebuild"), uuid.uuid4().hex,
                           ttl_ms=REBUILD_LEASE_MS)

    def rebuild(self) -> int | None:
        """One pass under the rebuild lease: how many messages were parked again, or None if
        another scheduler holds the lease."""
        if not self.lease.renew():
            return None
        try:
            parked = 0
            for page in self._scheduled_pages():
                parked += self._rebuild_page(page)
                self.lease.renew()
            self._drop_orphans()
            return parked
        finally:
            self.lease.release()

    def _drop_orphans(self) -> None:
        """Waiting messages whose record is gone (topic or tenant deleted) are dropped."""
        members = [member for member, _ in self.redis.zscan_iter(self.keys.delayed())]
        dropped = 0
        for start in range(0, len(members), REBUILD_PAGE):
            page = members[start:start + REBUILD_PAGE]
            with self.database.session() as session:
                kept = set(session.scalars(select(MessageRecord.id).where(
                    MessageRecord.id.in_(page), MessageRecord.status == "scheduled")))
            dropped += sum(self.delays.cancel(member) for member in page if member not in kept)
        if dropped:
            log.info("dropped %d waiting messages of deleted topics", dropped)

    def _scheduled_pages(self) -> Iterable[list[MessageRecord]]:
        """Scheduled records by id, from every day (on `ix_message_records_scheduled`)."""
        after = ""
        while True:
            with self.database.session() as session:
                page = list(session.scalars(
                    select(MessageRecord)
                    .where(MessageRecord.status == "scheduled", MessageRecord.id > after)
                    .order_by(MessageRecord.id).limit(REBUILD_PAGE)))
                session.expunge_all()
            if not page:
                return
            yield page
            after = page[-1].id

    def _rebuild_page(self, records: list[MessageRecord]) -> int:
        ids = [r.id for r in records]
        waiting = self.delays.waiting(ids)
        released = self.delays.released_offsets([i for i in ids if i not in waiting])
        mark_published(self.database, released)
        parked = [r for r in records if r.id not in waiting and r.id not in released
                  and self.delays.park(r.id, due_ms(r), r.topic_id, r.partition_id,
                                       record_envelope(r))]
        self._unpark_cancelled([r.id for r in parked])
        if parked:
            log.info("parked %d scheduled messages the delay set had lost", len(parked))
        return len(parked)

    def _unpark_cancelled(self, record_ids: list[str]) -> None:
        """A message cancelled while it was being parked again must not be released."""
        if not record_ids:
            return
        with self.database.session() as session:
            gone = set(record_ids) - set(session.scalars(select(MessageRecord.id).where(
                MessageRecord.id.in_(record_ids), MessageRecord.status == "scheduled")))
        for record_id in gone:
            self.delays.cancel(record_id)


class DelayedJobs:
    """The releaser thread, the rebuild job and the recurring schedules of one scheduler."""

    def __init__(self, settings: Settings, stop: threading.Event,
                 tracing: Tracing | None = None) -> None:
        self.database = Database(settings.database_url, pool_size=4)
        self.redis = connect(settings, max_connections=4)
        keys = Keys.of(settings)
        delays = DelaySet(self.redis, keys, stream_cap=settings.stream_max_len)
        self.releaser = Releaser(settings, self.database, stop)
        self.rebuilder = Rebuilder(self.redis, keys, self.database, delays)

        def publisher() -> Publisher:  # one per job: jobs run in threads of their own
            return Publisher.build(self.database.engine, self.redis, keys,
                                   stream_cap=settings.stream_max_len,
                                   wait_replicas=settings.redis_wait_replicas,
                                   wait_timeout_ms=settings.redis_wait_timeout_ms)

        self.recurring = Recurring(self.redis, keys, self.database, publisher(),
                                   keyring=cached_keyring(settings.mq_master_key,
                                                          settings.mq_old_master_keys),
                                   tracing=tracing)
        self.housekeeping = Housekeeping(self.redis, keys, self.database, publisher())
        self._next_rebuild = 0.0

    def start(self) -> None:
        self.releaser.start()

    def rebuild(self) -> None:
        """Called every `REBUILD_RETRY_S`: rebuilds once every `REBUILD_S`, and sooner again
        when the lease was busy."""
        if time.monotonic() < self._next_rebuild:
            return
        if self.rebuilder.rebuild() is not None:
            self._next_rebuild = time.monotonic() + REBUILD_S

    def fire_schedules(self) -> None:
        self.recurring.fire_due()

    def trim_retention(self) -> None:
        self.housekeeping.trim_retention()

    def sweep_outbox(self) -> None:
        self.housekeeping.sweep_outbox()

    def close(self) -> None:
        self.releaser.join(timeout=5)
        self.releaser.recorder.join(timeout=10)
        self.database.dispose()
