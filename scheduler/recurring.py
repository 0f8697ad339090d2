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

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from broker.connection import RedisClient
from broker.keys import Keys
from formats.codec import topic_codec
from formats.encryption import Keyring
from models import Database, Schedule, Topic
from models.base import utcnow
from models.registry import referenced_schema
from mq.cron import cron_trigger, next_run
from mq.errors import MQError, ValidationError
from mq.tracing import TraceContext, Tracing, with_trace
from publishing.group import Publisher
from publishing.jobs import Job
from publishing.messages import PublishTarget, key_partition, prepare_message, scheduled

log = logging.getLogger(__name__)

#: Longer than a run takes to publish; how late a run may be when its claimant dies.
CLAIM_MS = 60_000
#: Runs are parked this far ahead of their time, so the releaser publishes them on time
#: rather than at the next tick of this job.
LOOKAHEAD = timedelta(seconds=1)
SCHEDULE_HEADER = "X-MQ-Schedule-Id"


class Recurring:
    def __init__(self, redis: RedisClient, keys: Keys, database: Database, publisher: Publisher,
                 *, keyring: Keyring | None = None, tracing: Tracing | None = None) -> None:
        self.keyring = keyring
        self.tracing = tracing or Tracing()
        self.redis = redis
        self.keys = keys
        self.database = database
        self.publisher = publisher

    def fire_due(self) -> int:
        """Publish every due run; returns how many this scheduler published."""
        now = utcnow()
        with self.database.session() as session:
            rows = session.execute(
                select(Schedule, Topic.status)
                .join(Topic, Topic.id == Schedule.topic_id)
                .where(Schedule.next_run_at <= now + LOOKAHEAD)).all()
            session.expunge_all()
        return sum(self._fire(schedule, status, now) for schedule, status in rows)

    def _fire(self, schedule: Schedule, topic_status: str, now: datetime) -> int:
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
            fired = self._publish(schedule, run_at, run_ms)
        with self.database.session() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id, Schedule.next_run_at == run_at)
                .values(next_run_at=following, last_run_at=run_at))
            session.commit()
        return fired

    def _publish(self, schedule: Schedule, run_at: datetime, run_ms: int) -> int:
        """Publish one run through the publishing core: a `scheduled` record, parked."""
        with self.database.session() as session:
            topic = session.get(Topic, schedule.topic_id)
            if topic is None:
                return 0
            target = PublishTarget.of(topic, topic_codec(topic, referenced_schema(
                session, topic.tenant_id, topic.schema_subject)))
        message = _message(schedule, run_ms, target.partition_count)
        parent = TraceContext.of_headers(message.get("headers"))
        with self.tracing.producer(target.name, parent,
                                   messaging__message__id=message["message_id"]) as trace:
            if trace is not None:
                message = with_trace(message, trace, replace=True)
            try:
                item = scheduled(prepare_message(target, f"schedule:{schedule.id}", message,
                                                 keyring=self.keyring),
                                 run_at, message.get("ttl_ms"))
                [answer] = self.publisher.publish_now(Job(target.name, [item]))
            except MQError as exc:  # e.g. encrypted, but the master key is gone
                log.warning("schedule run %s skipped: %s", message["message_id"], exc)
                return 0
            return 0 if answer.duplicate else 1


def _message(schedule: Schedule, run_ms: int, partitions: int) -> dict[str, Any]:
    """The message fields of one run: the schedule's, with the run's own id, the schedule id
    in a header, and a partition the topic has."""
    fields = dict(schedule.message)
    message_id = f"{schedule.id}:{run_ms}"
    explicit = fields.get("partition")
    if explicit is None or explicit >= partitions:
        fields["partition"] = key_partition(fields.get("key") or message_id, partitions)
    fields["message_id"] = message_id
    fields["headers"] = {**(fields.get("headers") or {}), SCHEDULE_HEADER: schedule.id}
    return fields
