"""Housekeeping jobs: stream retention, dead-letter retention and the outbox sweep.

Both run under a Redis lease renewed as the work goes on, so that of two schedulers one does
the work, and one that dies while holding it holds the other up for `LEASE_MS` at most.

Retention trims each partition stream to the topic's `retention_ms` with `XTRIM MINID`, but
never past what a consumer group still needs: the bound is the lowest of the retention cut-off,
each group's smallest pending id (read, not acknowledged) and each group's last delivered id
(what follows it is unread). The bound is computed and applied in one Lua script, so no group
reads or is created in between. A paused or slow subscription thus keeps its entries; the
stream's length cap (`STREAM_MAX_LEN`) still applies to everything.

Dead-letter retention trims each subscription's dead-letter listing (`Keys.dead_letters`) to
the `retention_ms` of its dead-letter topic (a week when that topic does not exist yet); its
entries are also messages of that topic, which the topic's own retention trims.

The outbox sweep hands over records left without an offset (a publishing process died
between its writes, see `publishing.group`): records `published` without an offset and older
than `OUTBOX_AGE`, so that no publish still in flight is taken. A record whose append marker
is in Redis reached its stream and only gets its offset; the others are appended now.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import aliased

from broker.connection import RedisClient
from broker.heartbeats import Lease
from broker.keys import Keys
from broker.scripts import LuaScript
from models import Database, MessageRecord, Subscription, Topic
from models.base import utcnow
from publishing.group import Publisher
from publishing.messages import Prepared

log = logging.getLogger(__name__)

LEASE_MS = 15_000
#: A record this old without an offset is the outbox sweep's (its publisher appends within
#: milliseconds of its commit, or died); appending is idempotent per record while its marker
#: lives (`broker.streams`), so a publisher and the sweep racing over one record append it once.
OUTBOX_AGE = timedelta(seconds=5)
#: How often the sweep looks: a message whose publisher died is delivered within about
#: `OUTBOX_AGE` + this (one index range scan of records without an offset each time).
OUTBOX_SWEEP_S = 2.0
OUTBOX_PAGE = 500
DEAD_LETTER_RETENTION_MS = 7 * 24 * 3600 * 1000


class Housekeeping:
    def __init__(self, redis: RedisClient, keys: Keys, database: Database, publisher: Publisher
                 ) -> None:
        self.redis = redis
        self.publisher = publisher
        self.keys = keys
        self.database = database
        self._trim = LuaScript(redis, "scheduler", "retention_trim")
        owner = uuid.uuid4().hex
        self._retention = Lease(redis, keys.lock("retention"), owner, ttl_ms=LEASE_MS)
        self._outbox = Lease(redis, keys.lock("outbox"), owner, ttl_ms=LEASE_MS)

    def trim_retention(self) -> int:
        """Trim every topic's partitions (see the module docstring); returns entries removed."""
        if not self._retention.renew():
            return 0
        try:
            with self.database.session() as session:
                topics = session.execute(
                    select(Topic.id, Topic.partition_count, Topic.retention_ms)).all()
            now_ms = int(time.time() * 1000)
            removed = 0
            for topic_id, partitions, retention_ms in topics:
                removed += self.trim_topic(topic_id, partitions, now_ms - retention_ms)
                self._retention.renew()
            removed += self.trim_dead_letters(now_ms)
        finally:
            self._retention.release()
        if removed:
            log.info("retention trimmed %d stream entries", removed)
        return removed

    def trim_topic(self, topic_id: str, partitions: int, cutoff_ms: int) -> int:
        return sum(int(self._trim(keys=[key], args=[f"{max(0, cutoff_ms)}-0"]))
                   for key in self.keys.streams(topic_id, partitions))

    def trim_dead_letters(self, now_ms: int) -> int:
        """Trim every subscription's dead-letter listing to its dead-letter topic's retention."""
        dead_letter_topic = aliased(Topic)
        with self.database.session() as session:
            rows = session.execute(
                select(Subscription.id, dead_letter_topic.retention_ms)
                .outerjoin(dead_letter_topic,
                           (dead_letter_topic.tenant_id == Subscription.tenant_id)
                           & (dead_letter_topic.name == Subscription.dead_letter_queue))
            ).all()
        pipe = self.redis.pipeline(transaction=False)
        for subscription_id, retention_ms in rows:
            cutoff = max(0, now_ms - (retention_ms or DEAD_LETTER_RETENTION_MS))
            pipe.xtrim(self.keys.dead_letters(subscription_id), minid=f"{cutoff}-0",
                       approximate=False)
        return sum(pipe.execute()) if rows else 0

    def sweep_outbox(self, *, age: timedelta = OUTBOX_AGE) -> int:
        """Hand over records that never reached their stream; returns how many."""
        if not self._outbox.renew():
            return 0
        try:
            return self._sweep(utcnow() - age)
        finally:
            self._outbox.release()

    def _sweep(self, older_than: datetime) -> int:
        """Pages of records without an offset, by id. Reads every day's partition (a record
        may have waited any time), each on `ix_message_records_unhanded`, where the records
        without an offset are a handful at the front."""
        handed = 0
        after = ""
        while True:
            with self.database.session() as session:
                records = list(session.scalars(
                    select(MessageRecord)
                    .where(MessageRecord.offset_value.is_(None),
                           MessageRecord.status == "published",
                           MessageRecord.published_at < older_than,
                           MessageRecord.id > after)
                    .order_by(MessageRecord.id).limit(OUTBOX_PAGE)))
            if not records:
                break
            appended = self.publisher.hand_over([Prepared.of_record(r) for r in records])
            handed += appended
            if appended < len(records):
                log.info("outbox sweep: %d records had reached their streams; offsets written",
                         len(records) - appended)
            after = records[-1].id
            self._outbox.renew()
        if handed:
            log.warning("outbox sweep handed %d unpublished records to their streams", handed)
        return handed
