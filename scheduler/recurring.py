"""Recurring schedules: each due run publishes one message, once, whichever scheduler runs it.

A run is claimed with `SET NX` on `lock:cron:<schedule id>:<run ms>`, and its message id is
`<schedule id>:<run ms>`, unique per tenant in the database: two schedulers never publish the
same run twice. Only the claim's holder moves the schedule on to its next run; a scheduler that
finds the run claimed leaves the schedule alone, so a holder that dies before publishing
delays the run by `CLAIM_MS` at most, and whoever claims it next publishes it (the unique
message id makes a second publish of a run a no-op). A message of a run cancelled in the
window between a dead holder's publish and the claim's expiry would be published again.

The message takes the delayed path (a `scheduled` record, parked in the delay set due at the
run time, so it is released at once and marked `published` by the releaser), with the
schedule id in the `X-MQ-Schedule-Id` header. Runs are parked up to `LOOKAHEAD` before their
time, so that the releaser publishes them on time. After a run the next one is computed from
the later of the run and now: a scheduler that was down fires the earliest missed run once and
skips the rest (coalescing), never a burst.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from broker.codec import PLAIN, Codec, EncodingError, topic_codec
from broker.connection import RedisClient
from broker.delays import DelaySet
from broker.envelope import Envelope
from broker.keys import Keys
from models import Database, MessageRecord, Schedule, Topic
from models.base import new_id, utcnow
from models.registry import referenced_schema
from mq.cron import cron_trigger, next_run
from mq.crypto import Keyring
from mq.errors import ValidationError
from scheduler.records import record_envelope

log = logging.getLogger(__name__)

#: Longer than a run takes to publish; how late a run may be when its claimant dies.
CLAIM_MS = 60_000
#: Runs are parked this far ahead of their time, so the releaser publishes them on time
#: rather than at the next tick of this job.
LOOKAHEAD = timedelta(seconds=1)
SCHEDULE_HEADER = "X-MQ-Schedule-Id"


class Recurring:
    def __init__(self, redis: RedisClient, keys: Keys, database: Database, delays: DelaySet,
                 *, keyring: Keyring | None = None) -> None:
        self.keyring = keyring
        self.redis = redis
        self.keys = keys
        self.database = database
        self.delays = delays

    def fire_due(self) -> int:
        """Publish every due run; returns how many this scheduler published."""
        now = utcnow()
        with self.database.session() as session:
            rows = session.execute(
                select(Schedule, Topic.partition_count, Topic.status)
                .join(Topic, Topic.id == Schedule.topic_id)
                .where(Schedule.next_run_at <= now + LOOKAHEAD)).all()
            session.expunge_all()
        return sum(self._fire(schedule, partitions, status, now)
                   for schedule, partitions, status in rows)

    def _fire(self, schedule: Schedule, partitions: int, topic_status: str,
              now: datetime) -> int:
        run_at = schedule.next_run_at
        assert run_at is not None
        try:
            trigger = cron_trigger(schedule.cron, schedule.timezone)
            following = next_run(trigger, max(now, run_at))
        except ValidationError:
            log.warning("schedule %s has an invalid cron expression; stopped", schedule.id)
            following = None
        run_ms = int(run_at.timestamp() * 1000)
        claim = self.keys.lock(f"cron:{schedule.id}:{run_ms}")
        if not self.redis.set(claim, "1", nx=True, px=CLAIM_MS):
            return 0  # another scheduler is firing this run, or died doing so
        fired = 0
        if topic_status == "active":
            fired = self._publish(schedule, run_at, run_ms, partitions)
        with self.database.session() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id, Schedule.next_run_at == run_at)
                .values(next_run_at=following, last_run_at=run_at))
            session.commit()
        return fired

    def _publish(self, schedule: Schedule, run_at: datetime, run_ms: int,
                 partitions: int) -> int:
        row, envelope = _message(schedule, run_at, run_ms, partitions)
        with self.database.session() as session:
            topic = session.get(Topic, schedule.topic_id)
            codec = topic_codec(topic, referenced_schema(session, topic.tenant_id,
                                                         topic.schema_subject)) \
                if topic is not None else PLAIN
            if not codec.plain:
                try:
                    row, envelope = self._encoded(codec, row, envelope)
                except EncodingError as exc:  # e.g. encrypted, but the master key is gone
                    log.warning("schedule run %s skipped: cannot be encoded for topic %s: %s",
                                row["message_id"], topic.name, exc)
                    return 0
            try:
                session.execute(insert(MessageRecord.__table__), [row])
                session.commit()
            except IntegrityError:  # this run was published already
                return 0
        self.delays.park(row["id"], run_ms, schedule.topic_id, row["partition_id"], envelope)
        return 1

    def _encoded(self, codec: Codec, row: dict[str, Any], envelope: Envelope
                 ) -> tuple[dict[str, Any], Envelope]:
        """The run's message as its topic stores it (format, compression, encryption)."""
        payload, headers = codec.encode(
            self.keyring, row["tenant_id"], row["message_id"], row["payload"], row["headers"])
        return ({**row, "payload": payload, "headers": headers},
                replace(envelope, payload=payload, headers=headers))


def _message(schedule: Schedule, run_at: datetime, run_ms: int, partitions: int
             ) -> tuple[dict[str, Any], Envelope]:
    """The record row and stream entry of one run, from the schedule's message fields."""
    fields = schedule.message
    message_id = f"{schedule.id}:{run_ms}"
    headers = {**(fields.get("headers") or {}), SCHEDULE_HEADER: schedule.id}
    payload = fields.get("payload")
    ttl = fields.get("ttl_ms")
    expires_at = run_at + timedelta(milliseconds=ttl) if ttl else None
    row = {
        "id": new_id(), "tenant_id": schedule.tenant_id, "topic_id": schedule.topic_id,
        "message_id": message_id, "message_key": fields.get("key"),
        "correlation_id": fields.get("correlation_id"), "trace_id": fields.get("trace_id"),
        "producer_id": f"schedule:{schedule.id}", "headers": headers, "payload": payload,
        "payload_size": len(json.dumps(payload, ensure_ascii=False,
                                       separators=(",", ":")).encode()),
        "content_type": fields.get("content_type") or "application/json",
        "partition_id": _partition(fields, message_id, partitions), "offset_value": None,
        "status": "scheduled", "retry_count": 0, "published_at": utcnow(),
        "scheduled_at": run_at, "expires_at": expires_at,
    }
    return row, record_envelope(MessageRecord(**row))  # published_ms: the run time


def _partition(fields: dict[str, Any], message_id: str, partitions: int) -> int:
    """Explicit partition (if the topic still has it), else a hash of the key or of the id."""
    explicit = fields.get("partition")
    if explicit is not None and explicit < partitions:
        return int(explicit)
    return zlib.crc32((fields.get("key") or message_id).encode()) % partitions
