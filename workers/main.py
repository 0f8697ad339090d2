"""Worker process entry point (`mq worker`).

One worker process = one `RedisStreamsBroker`, one dramatiq `Worker` (one consumer thread per
pool, `threads` worker threads), the batch record writer, and this main thread, which beats
the heartbeat and resyncs subscriptions from the database. `processes > 1` forks that many
such processes; the parent only forwards signals and waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

import dramatiq
from dramatiq.middleware import default_middleware
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from broker import control
from broker.delivery import DEFAULT_POOL, RouteTable
from broker.heartbeats import HEARTBEAT_S, Heartbeat
from broker.redis_streams import RedisStreamsBroker
from handlers.registry import HandlerRegistry
from models import Database
from mq.logging import RepeatedFailures
from mq.settings import Settings
from mq.tracing import Tracing
from workers.dead_letters import DeadLetterMessages
from workers.delivery import DeliveryMiddleware, declare_actor
from workers.metrics import WorkerMetrics
from workers.payloads import PayloadDecoder
from workers.records import RecordWriter
from workers.registry import SubscriptionRegistry
from workers.schemas import SchemaDefinitions

log = logging.getLogger(__name__)

RESYNC_S = 30.0
#: How long a stopping worker lets running deliveries finish.
STOP_TIMEOUT_MS = 30_000
SWITCH_INTERVAL_S = 0.001
PREFETCH_PER_THREAD = 8
#: How long dramatiq's threads block at most: an idle delivery thread on its work queue, a
#: pool consumer on its wake-up read. A stopping worker waits that long for each (twice, as
#: dramatiq stops the delivery threads before the consumers).
THREAD_TIMEOUT_MS = 250
#: How long a consumer thread waits before reconnecting after a connection error, and before
#: retrying an acknowledgement that failed on one (dramatiq waits 3 s and 5 s, and the ack
#: retry holds up the consumer thread): deliveries resume about this long after Redis does.
RECONNECT_DELAY_S = 1


def run(settings: Settings, *, pools: list[str], processes: int, threads: int) -> int:
    """Run a worker until SIGINT/SIGTERM; returns the exit code."""
    pools = list(dict.fromkeys(pools or [DEFAULT_POOL]))
    if processes <= 1:
        return run_process(settings, pools=pools, threads=threads)
    return _run_forked(settings, pools=pools, processes=processes, threads=threads)


def run_process(settings: Settings, *, pools: list[str], threads: int) -> int:
    # Hand the GIL over more often than every 5 ms: a consumer thread waiting behind a busy
    # thread would otherwise delay deliveries by whole intervals.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    dramatiq.worker.CONSUMER_RESTART_DELAY_SECS = RECONNECT_DELAY_S
    dramatiq.worker.POST_PROCESS_MESSAGE_RETRY_DELAY_SECS = RECONNECT_DELAY_S
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = max(1, threads)
    # Forked first, before this process opens any connection the writer could inherit.
    records = RecordWriter(settings.database_url)
    records.start()
    database = Database(settings.database_url, pool_size=2)
    payloads = PayloadDecoder(settings, SchemaDefinitions(database))
    routes = RouteTable()
    registry = SubscriptionRegistry(database, routes, pools, DeadLetterMessages(payloads))
    broker = RedisStreamsBroker(settings, registry, routes=routes,
                                middleware=[m() for m in default_middleware],
                                max_connections=threads + 6)
    tracing = Tracing.configure(settings, "mq-worker")
    handlers = HandlerRegistry(settings, tracing)
    delivery = DeliveryMiddleware(broker, records, handlers, payloads, tracing)
    broker.add_middleware(delivery)
    broker.add_middleware(WorkerMetrics(broker, settings))
    declare_actor(broker, delivery)
    for pool in pools:
        broker.declare_queue(pool)
    broker.control_seen = control.tip(broker.client, broker.keys)  # before the load below
    registry.resync()
    heartbeat = Heartbeat(broker.client, broker.keys, "worker",
                          ttl_s=max(settings.worker_dead_after_ms / 1000, 2 * HEARTBEAT_S),
                          alive_as=broker.instance,
                          fixed={"pools": pools, "threads": threads, "instance": broker.instance})
    heartbeat.beat(subscriptions=len(broker.routes))
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, queues=set(pools), worker_threads=threads,
                             worker_timeout=THREAD_TIMEOUT_MS)
    # Entries held per pool consumer (read, queued, running or being acked). Dramatiq's
    # default of 2 per thread left threads idle while the consumer was between round trips.
    worker.queue_prefetch = settings.worker_prefetch or threads * PREFETCH_PER_THREAD
    worker.start()
    log.info("worker %s serving %d subscriptions on pools %s with %d threads",
             broker.instance, len(broker.routes), ",".join(pools), threads)
    _main_loop(stop, broker, registry, heartbeat)
    worker.stop(timeout=STOP_TIMEOUT_MS)
    records.stop()
    handlers.close()
    tracing.shutdown()
    heartbeat.stop()
    broker.close()
    database.dispose()
    return 0


def _main_loop(stop: threading.Event, broker: RedisStreamsBroker,
               registry: SubscriptionRegistry, heartbeat: Heartbeat) -> None:
    failures = RepeatedFailures(log, outages=(RedisError, SQLAlchemyError))
    next_resync = time.monotonic() + RESYNC_S

    def beat() -> None:
        heartbeat.beat(subscriptions=len(broker.routes))

    while not stop.is_set():
        failures.run("heartbeat", beat)
        if time.monotonic() >= next_resync:
            next_resync = time.monotonic() + RESYNC_S
            failures.run("subscription resync", registry.resync)
        stop.wait(HEARTBEAT_S)


def _run_forked(settings: Settings, *, pools: list[str], processes: int, threads: int) -> int:
    children: list[int] = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_process(settings, pools=pools, threads=threads)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status
