"""The group writer of an API process: it collects the publishes of all request threads into
groups and writes each with a `Publisher` (see `publishing.group`)."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from typing import ClassVar

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from mq.errors import DatabaseUnavailable
from publishing.group import Publisher
from publishing.jobs import Job, Published

log = logging.getLogger(__name__)

#: The most messages one group takes (a group may exceed it by one batch).
MAX_GROUP_MESSAGES = 5000
#: How long offsets wait for the next group before the idle writer writes them on their own.
IDLE_FLUSH_S = 0.02
#: How long a publish waits for its group before it answers 503.
ANSWER_TIMEOUT_S = 30.0


class GroupWriter:
    """One per API process: collects the publishes of all request threads into groups and
    writes each group with a `Publisher` (see `publishing.group`).

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
