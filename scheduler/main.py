"""Scheduler process entry point (`mq scheduler`).

APScheduler runs the jobs; each is idempotent, so a second scheduler is safe:
- release due retries (atomic, `broker.retries`) into each pool's direct stream,
  every `RELEASE_S`;
- the heartbeat shown by `GET /status`;
- reaping consumers that are idle and hold nothing (each worker start adds a consumer to every
  group it reads; a consumer with pending entries is never removed, as that would drop them);
- the database's partitions and retention (`scheduler.storage`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import undefined
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from broker.connection import connect
from broker.delivery import DEFAULT_POOL
from broker.heartbeats import HEARTBEAT_S, Heartbeat, Lease, live_processes
from broker.keys import Keys
from broker.retries import RetrySet
from mq.logging import RepeatedFailures
from mq.settings import Settings
from mq.tracing import Tracing
from scheduler.delayed import HOUSEKEEPING_S, REBUILD_RETRY_S, DelayedJobs
from scheduler.housekeeping import OUTBOX_SWEEP_S
from scheduler.janitor import reap_consumers
from scheduler.metrics import GaugeExporter
from scheduler.storage import STORAGE_S, RecordStorage

log = logging.getLogger(__name__)

#: A dead scheduler leaves `GET /status` (and a standby takes the leadership shown there)
#: within this many heartbeats. Every job is atomic or holds a lease of its own, so a standby
#: releases due messages all along; leadership decides nothing else.
BEATS_TO_DEATH = 3
RELEASE_S = 0.1
REAP_S = 300.0


class Jobs:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect(settings, max_connections=8)
        self.keys = Keys.of(settings)
        self.retries = RetrySet(self.redis, self.keys)
        ttl_s = BEATS_TO_DEATH * HEARTBEAT_S
        self.heartbeat = Heartbeat(self.redis, self.keys, "scheduler", ttl_s=ttl_s)
        self.leadership = Lease(self.redis, self.keys.lock("scheduler-leader"),
                                self.heartbeat.id, ttl_ms=int(ttl_s * 1000))
        self.pools = {DEFAULT_POOL}

    def release_retries(self) -> None:
        for pool in sorted(self.pools):
            moved = self.retries.release(pool)
            if moved:
                log.debug("released %d retries of pool %s", moved, pool)

    def beat(self) -> None:
        self.heartbeat.beat(leader=self.leadership.renew())
        for process in live_processes(self.redis, self.keys):
            self.pools.update(process.get("pools") or ())

    def reap(self) -> None:
        removed = reap_consumers(self.settings, self.redis, self.keys)
        if removed:
            log.info("removed %d idle consumers", removed)


def run(settings: Settings) -> int:
    """Run the scheduler until SIGINT/SIGTERM; returns the exit code."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    jobs = Jobs(settings)
    jobs.beat()
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 5})
    failures = RepeatedFailures(log, outages=(RedisError, SQLAlchemyError))

    def every(seconds: float, job: Callable[[], object], name: str, now: bool = False) -> None:
        scheduler.add_job(failures.guard(name, job), "interval", seconds=seconds, id=name,
                          next_run_time=datetime.now(UTC) if now else undefined)

    every(RELEASE_S, jobs.release_retries, "release-retries")
    every(HEARTBEAT_S, jobs.beat, "heartbeat")
    every(REAP_S, jobs.reap, "reap-consumers")
    GaugeExporter(settings, jobs.redis, jobs.keys).schedule(scheduler)
    tracing = Tracing.configure(settings, "mq-scheduler")
    delayed = DelayedJobs(settings, stop, tracing)
    delayed.start()
    every(REBUILD_RETRY_S, delayed.rebuild, "rebuild-delay-set", now=True)
    every(0.2, delayed.fire_schedules, "recurring-schedules")
    every(HOUSEKEEPING_S, delayed.trim_retention, "trim-retention", now=True)
    every(OUTBOX_SWEEP_S, delayed.sweep_outbox, "sweep-outbox", now=True)
    every(STORAGE_S, RecordStorage(settings, delayed.database).run, "storage", now=True)
    scheduler.start()
    log.info("scheduler started")
    stop.wait()
    scheduler.shutdown(wait=True)
    delayed.close()
    tracing.shutdown()
    jobs.heartbeat.stop()
    return 0
