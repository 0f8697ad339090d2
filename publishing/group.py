"""Store-and-append for groups of publishes (the group writer of an API process, which collects
them, is `publishing.writer`).

A group is the publishes of many requests (single messages, batches, delayed messages) taken
together. Writing one costs one database statement and one Redis round trip, whatever its
size, so under load the commit flush and the round trips are paid per group, not per request
(the way Kafka producers linger and PostgreSQL's `commit_delay` work):

0. When a publish trusted a cached epoch (`api.cache`), one Redis read of the current epoch
   for the whole group; publishes whose look-ups were stale are sent back (`StaleEpoch`).
1. One database statement, its own transaction (`publishing.records.write_group`): the
   offsets of earlier groups (see below), every record of the group whose `message_id` is
   free (claimed in `idempotency_keys`, taken for 24 h), and the records that held the
   producers' `message_id`s before (duplicates).
2. One pipelined Redis round trip: every new entry appended to its partition stream by a
   script that also marks its record as appended (`Keys.appended`), every delayed message
   parked in the delay set, the markers of offsets now committed deleted, the topics' publish
   rates counted.
3. The waiting publishes are answered.

Why this order is safe. A publish is answered `2xx` only after both its commit and its append.
Committing first means no entry ever reaches a stream without a record to deduplicate a retry
against. If Redis refuses the append, the records that did not reach Redis are deleted again
and their publishes answer `503`, so a retry publishes for real; should that delete fail too,
the records stay without an offset for the outbox sweep to hand over. A message that is both
committed and appended is never answered with `5xx`: nothing runs after the append but the
answer.

Offsets. Writing each group's offsets back in a second commit would double the commits. They
are folded into the next group's statement instead, or, when no group follows, written by a
transaction that does not wait for its flush (a later durable commit flushes it too, since the
WAL is written in order). Until an offset is durably committed its marker stays in Redis; the
outbox sweep (`scheduler.housekeeping`) finds records left without an offset by a publisher
that died, and takes the offset from the marker instead of appending the message again: a
crash between append and offset write-back never delivers a message twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from broker.connection import RedisClient
from broker.delays import DelaySet
from broker.keys import Keys
from broker.rates import Rates
from broker.streams import TopicStreams
from models.base import utcnow
from models.partitions import create_missing_partitions, is_missing_partition
from mq.errors import Conflict, MQError, ReplicasBehind, TopicNotFound, ValidationError
from publishing import records
from publishing.appends import Appended, GroupAppender
from publishing.jobs import (
    Job,
    MessageKey,
    Published,
    StaleEpoch,
    as_service_error,
    first_of_each_message,
    is_bad_data,
    new_answer,
    stored_answer,
    unavailable,
)
from publishing.messages import Prepared
from publishing.offsets import PendingOffsets

log = logging.getLogger(__name__)

Stored = dict[MessageKey, records.StoredRecord]


class Publisher:
    """Writes groups of jobs (see the module docstring). Not thread-safe: one writer thread
    (`GroupWriter`) or one caller at a time uses it."""

    def __init__(self, engine: Engine, redis: RedisClient, streams: TopicStreams,
                 delays: DelaySet, rates: Rates, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> None:
        self.engine = engine
        self.redis = redis
        self.keys = streams.keys
        self.appender = GroupAppender(redis, streams, delays, rates, wait_replicas=wait_replicas,
                                      wait_timeout_ms=wait_timeout_ms)
        self.offsets = PendingOffsets()
        self._connection: Connection | None = None

    @classmethod
    def build(cls, engine: Engine, redis: RedisClient, keys: Keys, *, stream_cap: int,
              wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> Publisher:
        """`wait_replicas`: replicas that must acknowledge an append before its answer
        (`publishing.appends`)."""
        return cls(engine, redis, TopicStreams(redis, keys, max_len=stream_cap),
                   DelaySet(redis, keys, stream_cap=stream_cap), Rates(redis, keys),
                   wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    # --- one group ------------------------------------------------------------------------

    def write(self, jobs: Sequence[Job]) -> None:
        """Store and append every job of the group and resolve their futures."""
        jobs = self._current(jobs)
        if not jobs:
            return
        try:
            answers = self._write(jobs)
        except _OneByOne:
            for job in jobs:
                self.write_alone(job)
            return
        except Exception as exc:  # every job of the group shares the failure
            self._fail(jobs, exc)
            return
        for job, answer in zip(jobs, answers, strict=True):
            job.resolve(answer)

    def _current(self, jobs: Sequence[Job]) -> list[Job]:
        """Jobs whose callers trusted an old cache epoch fail with `StaleEpoch` (one Redis
        read for the group); the others go on."""
        if all(job.epoch is None for job in jobs):
            return list(jobs)
        try:
            # The clients decode replies (`broker.connection`): the epoch is text.
            epoch: str | None = cast(str | None, self.redis.get(self.keys.cache_epoch)) or "0"
        except RedisError:
            epoch = None
        current = []
        for job in jobs:
            if job.epoch is None or job.epoch == epoch:
                current.append(job)
            else:
                job.future.set_exception(StaleEpoch(epoch))
        return current

    def write_alone(self, job: Job) -> None:
        try:
            answer = self._write([job])[0]
        except _OneByOne as split:
            answer = self._refusal(job, split.cause)
        except Exception as exc:
            answer = as_service_error(exc)
        job.resolve(answer)

    def _write(self, jobs: Sequence[Job]) -> list[list[Published] | BaseException]:
        candidates = first_of_each_message(jobs)
        inserted, stored = self._store({key: item for key, (_, item) in candidates.items()})
        new = [item for _, item in candidates.values() if item.record_id in inserted]
        appended, failure = self._append(new)
        if failure is not None:
            self._forget_records([p.row for p in new if p.record_id not in appended])
        return [self._answers(job, candidates, inserted, appended, stored, failure)
                for job in jobs]

    def _store(self, candidates: dict[MessageKey, Prepared]) -> tuple[set[str], Stored]:
        """Step 1: one statement for the group's records, the earlier groups' offsets and
        the records of duplicates. A connection found broken (the database restarted since
        the last group) is replaced once, and a day found without its partition gets it, and
        the statement is sent again."""
        pending = self.offsets.pending()
        try:
            try:
                inserted, stored = self._write_records(candidates, pending)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    self._drop_connection()
                elif is_missing_partition(exc):
                    create_missing_partitions(self.engine, utcnow())
                else:
                    raise
                inserted, stored = self._write_records(candidates, pending)
        except IntegrityError as exc:  # e.g. a topic deleted meanwhile: find whose
            raise _OneByOne(exc) from None
        except (DBAPIError, SQLAlchemyError) as exc:
            self._drop_connection()
            if isinstance(exc, DBAPIError) and is_bad_data(exc):
                raise _OneByOne(exc) from None
            raise
        self.offsets.settle(pending, durable=True)
        return inserted, stored

    def _write_records(self, candidates: dict[MessageKey, Prepared],
                       pending: dict[str, records.Offset]) -> tuple[set[str], Stored]:
        connection = self._connect()
        inserted, stored = records.write_group(
            connection, [p.row for p in candidates.values()], pending,
            [key for key, p in candidates.items() if p.given_id])
        missing = [key for key, p in candidates.items()
                   if p.record_id not in inserted and key not in stored]
        if missing:  # stored by another process meanwhile, or by a first try whose answer
            stored.update(records.stored_records(connection, missing))  # was lost
        for key, original in list(stored.items()):
            if original.record_id == candidates[key].record_id:  # our own first try's
                inserted.add(original.record_id)
                del stored[key]
            elif original.offset is None and original.record_id in pending:
                stored[key] = replace(original, offset=pending[original.record_id].value)
        return inserted, stored

    def _append(self, new: list[Prepared]) -> tuple[Appended, BaseException | None]:
        """Step 2 (`publishing.appends`), remembering the offsets that reached Redis."""
        appended, failure = self.appender.append(new, self.offsets.take_settled())
        self.offsets.remember(new, appended)
        return appended, failure

    def _answers(self, job: Job, candidates: dict[MessageKey, tuple[Job, Prepared]],
                 inserted: set[str], appended: Appended, stored: Stored,
                 failure: BaseException | None) -> list[Published] | BaseException:
        """Step 3: the job's answer, or why it failed."""
        answers: list[Published] = []
        unknown_offsets = []
        for item in job.items:
            key = (item.row["tenant_id"], item.message_id)
            first_job, first = candidates[key]
            if first.record_id in inserted:
                if first.record_id not in appended or isinstance(failure, ReplicasBehind):
                    return unavailable(failure)
                answers.append(new_answer(first, first_job.topic_name,
                                           appended[first.record_id],
                                           duplicate=first is not item))
                continue
            original = stored.get(key)
            if original is None:  # the conflicting record vanished meanwhile
                return Conflict("a concurrent request published some of these message ids; "
                                "retry the request")
            answers.append(stored_answer(original, self.offsets.offset_of(original.record_id)))
            if answers[-1].offset is None and original.status == "published":
                unknown_offsets.append((len(answers) - 1, original))
        if unknown_offsets:
            answers = self._with_marked_offsets(answers, unknown_offsets)
        return answers

    def _with_marked_offsets(self, answers: list[Published],
                             unknown: list[tuple[int, records.StoredRecord]]) -> list[Published]:
        """Duplicates of messages whose offsets another process has not committed yet take
        them from the markers (best effort: without Redis they answer without an offset)."""
        try:
            found = self.appender.marked_offsets([original for _, original in unknown])
        except RedisError:
            return answers
        out = list(answers)
        for index, original in unknown:
            if original.record_id in found:
                out[index] = stored_answer(original, found[original.record_id])
        return out

    def publish_now(self, job: Job) -> list[Published]:
        """Write one job as a group of its own and wait for its offsets to be committed (for
        callers without a group writer, such as the scheduler's cron runs)."""
        self.write_alone(job)
        try:
            return job.future.result()
        finally:
            self.flush_offsets(durable=True)

    def hand_over(self, items: list[Prepared]) -> int:
        """Append messages whose records are committed but not known to be in their streams
        (the outbox sweep's records), and commit their offsets. A record whose marker says it
        was appended only gets its offset: it is never appended twice. Returns how many were
        appended now; raises the Redis error if some could not be."""
        marked = self.appender.marked_offsets(items)
        self.offsets.remember(items, dict(marked))
        missing = [p for p in items if p.record_id not in marked]
        appended, failure = self._append(missing)
        self.flush_offsets(durable=True)
        if failure is not None:
            raise failure
        return len(appended)

    # --- offsets and markers ----------------------------------------------------------------

    @property
    def offsets_waiting(self) -> bool:
        """Whether offsets of appended messages wait to be written."""
        return self.offsets.waiting

    def flush_offsets(self, *, durable: bool = False) -> None:
        """Write the offsets waiting for a group when no group comes (the writer is idle).
        `durable` waits for the flush and deletes the markers too (for one-off callers)."""
        pending = self.offsets.pending()
        if not pending and not (durable and self.offsets.markers_waiting):
            return
        try:
            connection = self._connect()
            with connection.begin():
                records.set_offsets(connection, pending, lazily=not durable)
        except SQLAlchemyError as exc:
            self._drop_connection()
            log.warning("offsets of %d messages not written yet: %s", len(pending), exc)
            return
        self.offsets.settle(pending, durable=durable)
        if durable:
            self.appender.forget_markers(self.offsets.take_settled())

    # --- failures ---------------------------------------------------------------------------

    def _forget_records(self, rows: list[dict[str, Any]]) -> None:
        """Delete the records of messages Redis refused, and free their message ids (best
        effort: the sweep hands over whatever stays)."""
        if not rows:
            return
        try:
            connection = self._connect()
            with connection.begin():
                records.delete_records(connection, rows)
        except SQLAlchemyError:
            self._drop_connection()
            log.warning("records of %d unpublished messages left for the outbox sweep",
                        len(rows))

    def _refusal(self, job: Job, cause: BaseException) -> BaseException:
        """Why the database refused one job's records."""
        try:
            connection = self._connect()
            with connection.begin():
                gone = job.items and not records.topic_exists(connection, job.items[0].topic_id)
        except SQLAlchemyError as exc:
            self._drop_connection()
            return as_service_error(exc)
        if gone:
            return TopicNotFound(job.topic_name)
        if isinstance(cause, IntegrityError):
            return Conflict("a concurrent request published some of these message ids; "
                            "retry the request")
        return ValidationError("the database refused a value of this message", {})

    def _fail(self, jobs: Sequence[Job], exc: BaseException) -> None:
        error = as_service_error(exc)
        if not isinstance(error, MQError) or error.status >= 500:
            log.warning("a group of %d publishes failed: %s", len(jobs), exc)
        for job in jobs:
            job.future.set_exception(error)

    def _connect(self) -> Connection:
        """The publisher's own connection, in autocommit mode, so that each group's one
        statement is its own transaction (`records.write_group`). It carries prepared
        statements and their session settings (`models.bulk.PreparedStatement`), so it is
        closed for good rather than handed back to the pool."""
        if self._connection is None:
            self._connection = self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT")
        return self._connection

    def _drop_connection(self) -> None:
        """After a database error the connection is closed, so the next group starts on a
        fresh one."""
        if self._connection is None:
            return
        try:
            self._connection.invalidate()
            self._connection.close()
        except SQLAlchemyError:
            pass
        self._connection = None

    def close(self) -> None:
        self.flush_offsets(durable=True)
        self._drop_connection()


class _OneByOne(Exception):
    """The database refused the group's records: write its jobs one by one, so that only
    the job at fault fails."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause
