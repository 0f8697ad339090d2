"""Store-and-append for groups of publishes, and the group writer of an API process.

A group is the publishes of many requests (single messages, batches, delayed messages) taken
together. Writing one costs one database statement and one Redis round trip, whatever its
size, so under load the commit flush and the round trips are paid per group, not per request
(the way Kafka producers linger and PostgreSQL's `commit_delay` work):

0. When a publish trusted a cached epoch (`api.cache`), one Redis read of the current epoch
   for the whole group; publishes whose look-ups were stale are sent back (`StaleEpoch`).
1. One database statement, its own transaction (`publishing.records.write_group`): the
   offsets of earlier groups (see below), every record of the group in one
   `INSERT … ON CONFLICT DO NOTHING RETURNING id`, and the records that held the producers'
   `message_id`s before (duplicates).
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

import atexit
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
)

from broker.connection import RedisClient
from broker.delays import DelaySet
from broker.keys import Keys
from broker.rates import Rates
from broker.streams import TopicStreams
from mq.errors import (
    BrokerNotAvailable,
    Conflict,
    DatabaseUnavailable,
    MQError,
    TopicNotFound,
    ValidationError,
)
from publishing import records
from publishing.messages import Prepared

log = logging.getLogger(__name__)

#: The most messages one group takes (a group may exceed it by one batch).
MAX_GROUP_MESSAGES = 5000
#: How long offsets wait for the next group before the idle writer writes them on their own.
IDLE_FLUSH_S = 0.02
#: How long a publish waits for its group before it answers 503.
ANSWER_TIMEOUT_S = 30.0

StreamRef = tuple[str, int]  # (topic id, partition)


@dataclass(frozen=True)
class Published:
    """The answer for one message: its ids, where it went, and whether it was a duplicate
    (then everything but `duplicate` is the original's)."""

    message_id: str
    topic_name: str
    partition: int
    offset: str | None
    published_at: datetime
    status: str
    scheduled_at: datetime | None
    duplicate: bool


@dataclass
class Job:
    """The publishes of one request: messages of one topic, stored all or none, in order."""

    topic_name: str
    items: list[Prepared]
    #: The cache epoch the caller's checks (key, topic, quotas) trusted without reading it;
    #: the group reads the current one before writing (`StaleEpoch` if it moved on).
    epoch: str | None = None
    future: Future[list[Published]] = field(default_factory=Future)


class StaleEpoch(MQError):
    """The caller's checks trusted a cache epoch that is no longer current: nothing was
    written; check again under `epoch` (None: Redis could not be read) and publish again."""

    def __init__(self, epoch: str | None) -> None:
        super().__init__("cached look-ups were stale; publish again")
        self.epoch = epoch


class Publisher:
    """Writes groups of jobs (see the module docstring). Not thread-safe: one writer thread
    (`GroupWriter`) or one caller at a time uses it."""

    def __init__(self, engine: Engine, redis: RedisClient, streams: TopicStreams,
                 delays: DelaySet, rates: Rates) -> None:
        self.engine = engine
        self.redis = redis
        self.streams = streams
        self.keys = streams.keys
        self.delays = delays
        self.rates = rates
        self._connection: Connection | None = None
        #: Appended, offset not yet committed: record id -> (stream, offset).
        self._pending: dict[str, tuple[StreamRef, str]] = {}
        #: Offsets committed without waiting for the flush: their markers wait for a durable
        #: commit. `_settled`: durably committed, markers to delete.
        self._soft_settled: dict[StreamRef, list[str]] = {}
        self._settled: dict[StreamRef, list[str]] = {}

    @classmethod
    def build(cls, engine: Engine, redis: RedisClient, keys: Keys, *, stream_cap: int
              ) -> Publisher:
        return cls(engine, redis, TopicStreams(redis, keys, max_len=stream_cap),
                   DelaySet(redis, keys, stream_cap=stream_cap), Rates(redis, keys))

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
            _resolve(job, answer)

    def _current(self, jobs: Sequence[Job]) -> list[Job]:
        """Jobs whose callers trusted an old cache epoch fail with `StaleEpoch` (one Redis
        read for the group); the others go on."""
        if all(job.epoch is None for job in jobs):
            return list(jobs)
        try:
            epoch: str | None = self.redis.get(self.keys.cache_epoch) or "0"
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
            answer = _as_service_error(exc)
        _resolve(job, answer)

    def _write(self, jobs: Sequence[Job]) -> list[list[Published] | BaseException]:
        candidates = _first_of_each_message(jobs)
        inserted, stored = self._store({key: item for key, (_, item) in candidates.items()})
        new = [item for _, item in candidates.values() if item.record_id in inserted]
        appended, failure = self._append(new)
        if failure is not None:
            self._forget_records([p.record_id for p in new if p.record_id not in appended])
        return [self._answers(job, candidates, inserted, appended, stored, failure)
                for job in jobs]

    def _store(self, candidates: dict[tuple[str, str], Prepared]
               ) -> tuple[set[str], dict[tuple[str, str], records.StoredRecord]]:
        """Step 1: one statement for the group's records, the earlier groups' offsets and
        the records of duplicates. A connection found broken (the database restarted since
        the last group) is replaced once, and the statement sent again."""
        pending = {rid: offset for rid, (_, offset) in self._pending.items()}
        try:
            try:
                inserted, stored = self._write_records(candidates, pending)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                self._drop_connection()
                inserted, stored = self._write_records(candidates, pending)
        except IntegrityError as exc:  # e.g. a topic deleted meanwhile: find whose
            raise _OneByOne(exc) from None
        except (DBAPIError, SQLAlchemyError) as exc:
            self._drop_connection()
            if isinstance(exc, DBAPIError) and _is_bad_data(exc):
                raise _OneByOne(exc) from None
            raise
        self._settle(pending, durable=True)
        return inserted, stored

    def _write_records(self, candidates: dict[tuple[str, str], Prepared],
                       pending: dict[str, str]
                       ) -> tuple[set[str], dict[tuple[str, str], records.StoredRecord]]:
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
                stored[key] = replace(original, offset=pending[original.record_id])
        return inserted, stored

    def _append(self, new: list[Prepared]) -> tuple[dict[str, str | None], BaseException | None]:
        """Step 2: one round trip. Returns record id -> offset (None for a parked message) of
        what reached Redis, and why the rest did not (None if all did)."""
        by_stream: dict[StreamRef, list[Prepared]] = {}
        parked: list[Prepared] = []
        for item in new:
            if item.due_ms is None:
                by_stream.setdefault((item.topic_id, item.partition), []).append(item)
            else:
                parked.append(item)
        pipe = self.redis.pipeline(transaction=False)
        scripts = [(items, self.streams.queue_append_marked(
            pipe, topic_id, partition, [(p.record_id, p.entry) for p in items]))
            for (topic_id, partition), items in by_stream.items()]
        for item in parked:
            self.delays.queue_park(pipe, item.record_id, item.due_ms or 0, item.topic_id,
                                   item.partition, item.envelope)
        settled, self._settled = self._settled, {}
        self.streams.queue_forget_markers(pipe, settled)
        self._queue_rates(pipe, new)
        try:
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        except RedisError as exc:
            return self._after_failed_append(new, exc)
        appended: dict[str, str | None] = {}
        failure: BaseException | None = None
        position = 0
        for items, count in scripts:
            offsets: list[str] = []
            for reply in replies[position:position + count]:
                if isinstance(reply, BaseException):
                    failure = reply
                else:
                    offsets += reply.split(",")
            position += count
            if len(offsets) == len(items):
                appended.update((p.record_id, off) for p, off in zip(items, offsets, strict=True))
        for item, reply in zip(parked, replies[position:position + len(parked)], strict=True):
            if isinstance(reply, BaseException):
                failure = reply
            else:
                appended[item.record_id] = None
        if failure is not None:
            return self._after_failed_append(new, failure, appended)
        self._remember(new, appended)
        return appended, None

    def _after_failed_append(self, new: list[Prepared], failure: BaseException,
                             appended: dict[str, str | None] | None = None
                             ) -> tuple[dict[str, str | None], BaseException]:
        """Find out what reached Redis nonetheless (from the markers)."""
        appended = dict(appended or {})
        with contextlib.suppress(RedisError):  # Redis is gone: nothing more reached it
            appended.update(self.streams.appended_offsets(
                [(p.topic_id, p.partition, p.record_id) for p in new
                 if p.due_ms is None and p.record_id not in appended]))
        self._remember(new, appended)
        log.warning("redis refused %d of %d messages: %s", len(new) - len(appended), len(new),
                    failure)
        return appended, failure

    def _answers(self, job: Job, candidates: dict[tuple[str, str], tuple[Job, Prepared]],
                 inserted: set[str], appended: dict[str, str | None],
                 stored: dict[tuple[str, str], records.StoredRecord],
                 failure: BaseException | None) -> list[Published] | BaseException:
        """Step 3: the job's answer, or why it failed."""
        answers: list[Published] = []
        unknown_offsets = []
        for item in job.items:
            key = (item.row["tenant_id"], item.message_id)
            first_job, first = candidates[key]
            if first.record_id in inserted:
                if first.record_id not in appended:
                    return _unavailable(failure)
                answers.append(_new_answer(first, first_job.topic_name,
                                           appended[first.record_id],
                                           duplicate=first is not item))
                continue
            original = stored.get(key)
            if original is None:  # the conflicting record vanished meanwhile
                return Conflict("a concurrent request published some of these message ids; "
                                "retry the request")
            answers.append(_stored_answer(original, self._pending_offset(original.record_id)))
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
            found = self.streams.appended_offsets(
                [(s.topic_id, s.partition, s.record_id) for _, s in unknown])
        except RedisError:
            return answers
        out = list(answers)
        for index, original in unknown:
            if original.record_id in found:
                out[index] = _stored_answer(original, found[original.record_id])
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
        marked = self.streams.appended_offsets(
            [(p.topic_id, p.partition, p.record_id) for p in items])
        self._remember(items, dict(marked))
        missing = [p for p in items if p.record_id not in marked]
        appended, failure = self._append(missing)
        self.flush_offsets(durable=True)
        if failure is not None:
            raise failure
        return len(appended)

    # --- offsets and markers ----------------------------------------------------------------

    def _remember(self, new: list[Prepared], appended: dict[str, str | None]) -> None:
        for item in new:
            offset = appended.get(item.record_id)
            if offset is not None:
                self._pending[item.record_id] = ((item.topic_id, item.partition), offset)

    @property
    def offsets_waiting(self) -> bool:
        """Whether offsets of appended messages wait to be written."""
        return bool(self._pending)

    def _pending_offset(self, record_id: str) -> str | None:
        pending = self._pending.get(record_id)
        return pending[1] if pending else None

    def _settle(self, committed: dict[str, str], *, durable: bool) -> None:
        """`committed` offsets are in the database now: their markers may go (after a
        durable commit; a commit that did not wait for its flush waits for the next one)."""
        if durable:
            for ref, ids in self._soft_settled.items():
                self._settled.setdefault(ref, []).extend(ids)
            self._soft_settled = {}
        target = self._settled if durable else self._soft_settled
        for record_id in committed:
            ref, _ = self._pending.pop(record_id)
            target.setdefault(ref, []).append(record_id)

    def flush_offsets(self, *, durable: bool = False) -> None:
        """Write the offsets waiting for a group when no group comes (the writer is idle).
        `durable` waits for the flush and deletes the markers too (for one-off callers)."""
        pending = {rid: offset for rid, (_, offset) in self._pending.items()}
        if not pending and not (durable and (self._soft_settled or self._settled)):
            return
        try:
            connection = self._connect()
            with connection.begin():
                records.set_offsets(connection, pending, lazily=not durable)
        except SQLAlchemyError as exc:
            self._drop_connection()
            log.warning("offsets of %d messages not written yet: %s", len(pending), exc)
            return
        self._settle(pending, durable=durable)
        if durable:
            self._forget_settled_markers()

    def _forget_settled_markers(self) -> None:
        settled, self._settled = self._settled, {}
        pipe = self.redis.pipeline(transaction=False)
        self.streams.queue_forget_markers(pipe, settled)
        try:
            pipe.execute()
        except RedisError:
            log.warning("markers of %d settled offsets left to expire",
                        sum(len(ids) for ids in settled.values()))

    def _queue_rates(self, pipe: Any, new: list[Prepared]) -> None:
        per_topic: dict[str, list[int]] = {}
        for item in new:
            if item.due_ms is None:
                tally = per_topic.setdefault(item.topic_id, [0, 0])
                tally[0] += 1
                tally[1] += item.row["payload_size"]
        for topic_id, (count, size) in per_topic.items():
            self.rates.queue_published(pipe, topic_id, count, size)

    # --- failures ---------------------------------------------------------------------------

    def _forget_records(self, record_ids: list[str]) -> None:
        """Delete the records of messages Redis refused (best effort: the sweep hands over
        whatever stays)."""
        if not record_ids:
            return
        try:
            connection = self._connect()
            with connection.begin():
                records.delete_records(connection, record_ids)
        except SQLAlchemyError:
            self._drop_connection()
            log.warning("records of %d unpublished messages left for the outbox sweep",
                        len(record_ids))

    def _refusal(self, job: Job, cause: BaseException) -> BaseException:
        """Why the database refused one job's records."""
        try:
            connection = self._connect()
            with connection.begin():
                gone = job.items and not records.topic_exists(connection, job.items[0].topic_id)
        except SQLAlchemyError as exc:
            self._drop_connection()
            return _as_service_error(exc)
        if gone:
            return TopicNotFound(job.topic_name)
        if isinstance(cause, IntegrityError):
            return Conflict("a concurrent request published some of these message ids; "
                            "retry the request")
        return ValidationError("the database refused a value of this message", {})

    def _fail(self, jobs: Sequence[Job], exc: BaseException) -> None:
        error = _as_service_error(exc)
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


class GroupWriter:
    """One per API process: collects the publishes of all request threads into groups and
    writes each group with a `Publisher` (see the module docstring).

    The writer takes whatever is waiting when it starts a group (up to
    `MAX_GROUP_MESSAGES`), so under load groups grow by themselves while the previous one is
    written, and a lone publish never waits for company. The thread starts on first use, so
    that a process forked after the app was built (gunicorn) runs its own.
    """

    #: The writers whose thread this process started, stopped together at exit.
    _started: ClassVar[weakref.WeakSet[GroupWriter]] = weakref.WeakSet()

    def __init__(self, publisher: Publisher, *, max_messages: int = MAX_GROUP_MESSAGES,
                 idle_flush_s: float = IDLE_FLUSH_S) -> None:
        self.publisher = publisher
        self.max_messages = max_messages
        self.idle_flush_s = idle_flush_s
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        #: Groups and jobs written by this process's writer (how much grouping happens).
        self.groups_written = 0
        self.jobs_written = 0

    def publish(self, job: Job, timeout: float = ANSWER_TIMEOUT_S) -> list[Published]:
        """Queue `job` for the next group and wait for its answer (or its error)."""
        self._ensure_running()
        self._queue.put(job)
        try:
            return job.future.result(timeout)
        except TimeoutError:
            raise DatabaseUnavailable("publishing timed out; the message may still be "
                                      "stored (retry with the same message_id)") from None

    def _ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="mq-group-writer",
                                                daemon=True)
                self._thread.start()
                self._started.add(self)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every writer this process started (at exit, or before its database goes)."""
        for writer in list(cls._started):
            writer.stop()

    def stop(self) -> None:
        """Finish the queued jobs and write the offsets still waiting (at process exit)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return
        self._queue.put(None)
        thread.join(timeout=10)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(
                    timeout=self.idle_flush_s if self.publisher.offsets_waiting else None)
            except queue.Empty:
                self.publisher.flush_offsets()
                continue
            if first is None:
                break
            group, stopping = self._collect(first)
            self.publisher.write(group)  # answers every job, whatever happens
            self.groups_written += 1
            self.jobs_written += len(group)
        try:
            self.publisher.close()
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("offsets of the last publishes left for the outbox sweep: %s", exc)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        group, count = [first], len(first.items)
        while count < self.max_messages:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return group, True
            group.append(job)
            count += len(job.items)
        return group, False


atexit.register(GroupWriter.stop_all)


class _OneByOne(Exception):
    """The database refused the group's records: write its jobs one by one, so that only
    the job at fault fails."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _resolve(job: Job, answer: list[Published] | BaseException) -> None:
    if isinstance(answer, BaseException):
        job.future.set_exception(answer)
    else:
        job.future.set_result(answer)


def _first_of_each_message(jobs: Sequence[Job]) -> dict[tuple[str, str], tuple[Job, Prepared]]:
    """The first item of each (tenant, message id) in group order, with its job: the one
    stored; later ones are duplicates of it."""
    first: dict[tuple[str, str], tuple[Job, Prepared]] = {}
    for job in jobs:
        for item in job.items:
            first.setdefault((item.row["tenant_id"], item.message_id), (job, item))
    return first


def _new_answer(item: Prepared, topic_name: str, offset: str | None, *,
                duplicate: bool) -> Published:
    row = item.row
    return Published(item.message_id, topic_name, item.partition, offset,
                     row["published_at"], row["status"], row.get("scheduled_at"), duplicate)


def _stored_answer(original: records.StoredRecord, offset: str | None) -> Published:
    return Published(original.message_id, original.topic_name, original.partition,
                     original.offset or offset, original.published_at, original.status,
                     original.scheduled_at, duplicate=True)


def _unavailable(failure: BaseException | None) -> BaseException:
    return _as_service_error(failure or RedisError("the message broker refused the message"))


def _as_service_error(exc: BaseException) -> BaseException:
    """Errors the API maps to its error body: MQErrors and the stores' unavailability."""
    if isinstance(exc, MQError):
        return exc
    if isinstance(exc, RedisError):
        return BrokerNotAvailable("the message broker is unreachable")
    if isinstance(exc, SQLAlchemyError):
        return DatabaseUnavailable("the metadata database is unreachable")
    return exc


def _is_bad_data(exc: DBAPIError) -> bool:
    """A value the database refuses (SQLSTATE class 22, data exception)."""
    code = getattr(exc.orig, "pgcode", None) or ""
    return code.startswith("22")
