"""Delivery latency and no-op throughput, next to stock dramatiq and Celery in the same run.

    python bench/deliver.py [--rate 1000] [--seconds 5] [--messages 10000] [--threads 8]

Three systems on the same Redis, each with one worker process of `--threads` threads and a
no-op handler that only notes when it was invoked:

- this service: the publishing core (`publishing.group.Publisher`: database record, then
  XADD) and a real worker process (`workers.main.run_process`: the Redis Streams broker, the
  stock dramatiq Worker and middleware, consumption records written by the batch writer)
  delivering to the `function` handler `bench.deliver:noop`;
- dramatiq's stock `RedisBroker` with an actor;
- Celery with its Redis broker and the `threads` pool.

Latency: a steady `--rate` messages/s for `--seconds` (publisher threads on an absolute
schedule), measured from the moment the publish call returned ("accepted") to the handler's
invocation; for this service also from the moment the publish call started, since its worker
can start a delivery before the second database commit of the publish returns.
Throughput: `--messages` are queued first, then the worker starts; messages/s between the
first and the last handler invocation.

Environment: `BENCH_DATABASE_URL` (admin URL of a PostgreSQL server; a database is created
and dropped), `BENCH_REDIS_URL`. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis import Redis

ADMIN_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL",
                                    "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FORK = multiprocessing.get_context("fork")


# --- what every worker does: note each invocation, stop after the expected count ------------

@dataclass
class Invocations:
    """Handler invocations of one worker process, dumped to `path` when it stops."""

    path: str
    expected: int
    seen: list[tuple[str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, message_id: str) -> None:
        now = time.time()
        with self.lock:
            self.seen.append((message_id, now))
            done = len(self.seen) == self.expected
        if done:
            os.kill(os.getpid(), signal.SIGTERM)

    def dump(self) -> None:
        Path(self.path).write_text(json.dumps(self.seen))


#: This worker process's invocations (set in the forked worker; read by `noop`).
CURRENT: Invocations | None = None


def noop(payload: Any, headers: dict[str, str]) -> None:
    """The no-op function handler of this service's worker (`bench.deliver:noop`)."""
    assert CURRENT is not None
    CURRENT.note(payload["id"])


def load_invocations(path: str) -> dict[str, float]:
    try:
        return dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return {}


# --- this service -------------------------------------------------------------------------

class MQSystem:
    name = "mq (this service)"

    def __init__(self, database_url: str, threads: int) -> None:
        from api.auth import Principal
        from broker.connection import connect
        from broker.keys import Keys, group_name
        from broker.streams import TopicStreams
        from models import Database, Subscription, Topic, upgrade
        from models.tenancy import create_tenant
        from mq.settings import Settings
        from publishing.group import Publisher

        upgrade(database_url)
        self.threads = threads
        self.settings = Settings(database_url=database_url, redis_url=REDIS_URL,
                                 redis_namespace=f"bench{uuid.uuid4().hex[:8]}",
                                 mq_function_modules=("bench",),
                                 log_level="WARNING", log_format="text")
        self.database = Database(database_url, pool_size=8)
        self.redis = connect(self.settings)
        self.keys = Keys.of(self.settings)
        self.streams = TopicStreams(self.redis, self.keys, max_len=10_000_000)
        self.publishing = threading.Lock()
        self.publisher = Publisher.build(self.database.engine, self.redis, self.keys,
                                         stream_cap=10_000_000)
        with self.database.session() as session:
            tenant, _ = create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}")
            self.principal = Principal(tenant.id, tenant.name, "bench", "bench", "admin")
            self.topic = Topic(tenant_id=tenant.id, name="bench")
            session.add(self.topic)
            session.commit()
            subscription = Subscription(
                tenant_id=tenant.id, topic_id=self.topic.id, consumer_group="noop",
                consumer_name="noop", subscription_type="redis_consumer",
                handler_config={"type": "function", "function": "bench.deliver:noop"},
                max_retry_attempts=0)
            session.add(subscription)
            session.commit()
            self.streams.create_group(self.topic.id, 1, group_name(tenant.id, "noop"),
                                      from_start=True)

    def worker(self, invocations: Invocations) -> None:
        import bench.deliver as handler_module  # the module the function handler imports
        from mq.logging import configure_logging
        from workers.main import run_process

        handler_module.CURRENT = invocations
        configure_logging(self.settings, "worker")
        try:
            run_process(self.settings, pools=["default"], threads=self.threads)
        finally:
            invocations.dump()

    def publish_group(self, size: int) -> list[str]:
        """The publishing core's flow (records, append, offsets) for `size` messages at once;
        returns the ids the handler will note (carried in the payloads)."""
        from publishing.jobs import Job
        from publishing.messages import PublishTarget, prepare_message

        ids = [uuid.uuid4().hex for _ in range(size)]
        target = PublishTarget.of(self.topic)
        items = [prepare_message(target, self.principal.key_name, {"payload": {"id": i}})
                 for i in ids]
        with self.publishing:  # a Publisher takes one caller at a time (`GroupWriter` in the API)
            self.publisher.publish_now(Job(target.name, items))
        return ids

    def append_one(self) -> str:
        """Only the broker step of a publish: XADD the stream entry."""
        from broker.envelope import Envelope

        message_id = uuid.uuid4().hex
        self.streams.append(self.topic.id, 0, Envelope(message_id, {"id": message_id},
                                                       int(time.time() * 1000)))
        return message_id

    def preload(self, count: int) -> None:
        for start in range(0, count, 1000):
            self.publish_group(min(1000, count - start))

    def close(self) -> None:
        self.publisher.close()
        purge_namespace(self.redis, self.settings.redis_namespace)
        self.database.dispose()


# --- stock dramatiq -----------------------------------------------------------------------

class DramatiqSystem:
    name = "dramatiq RedisBroker"

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.namespace = f"benchdq{uuid.uuid4().hex[:8]}"
        self.invocations: Invocations | None = None
        self.broker, self.actor = self._build()

    def _build(self) -> tuple[Any, Any]:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=REDIS_URL, namespace=self.namespace)

        def noop(message_id: str) -> None:
            assert self.invocations is not None
            self.invocations.note(message_id)

        actor = dramatiq.actor(noop, broker=broker, actor_name="noop", queue_name="bench",
                               max_retries=0)
        return broker, actor

    def worker(self, invocations: Invocations) -> None:
        import dramatiq

        self.invocations = invocations
        self.broker, self.actor = self._build()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        self.broker.emit_after("process_boot")
        worker = dramatiq.Worker(self.broker, worker_threads=self.threads)
        worker.start()
        stop.wait()
        worker.stop()
        invocations.dump()

    def publish_one(self) -> str:
        message_id = uuid.uuid4().hex
        self.actor.send(message_id)
        return message_id

    def preload(self, count: int) -> None:
        for _ in range(count):
            self.publish_one()

    def close(self) -> None:
        purge_namespace(Redis.from_url(REDIS_URL), self.namespace)


# --- Celery -------------------------------------------------------------------------------

class CelerySystem:
    name = "celery (redis, threads)"

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.queue = f"benchcelery{uuid.uuid4().hex[:8]}"
        self.invocations: Invocations | None = None
        self.app, self.task = self._build()

    def _build(self) -> tuple[Any, Any]:
        from celery import Celery

        app = Celery("bench", broker=REDIS_URL)
        app.conf.update(task_ignore_result=True, task_default_queue=self.queue,
                        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

        @app.task(name="noop")
        def noop(message_id: str) -> None:
            assert self.invocations is not None
            self.invocations.note(message_id)

        return app, noop

    def worker(self, invocations: Invocations) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)  # Celery's banner and warnings
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        self.invocations = invocations
        self.app, self.task = self._build()
        try:
            self.app.worker_main(["worker", "--pool=threads", f"--concurrency={self.threads}",
                                  f"--queues={self.queue}", "--without-heartbeat",
                                  "--without-gossip", "--without-mingle", "--loglevel=WARNING"])
        except SystemExit:
            pass
        finally:
            invocations.dump()

    def publish_one(self) -> str:
        message_id = uuid.uuid4().hex
        self.task.apply_async((message_id,))
        return message_id

    def preload(self, count: int) -> None:
        for _ in range(count):
            self.publish_one()

    def close(self) -> None:
        Redis.from_url(REDIS_URL).delete(self.queue, f"{self.queue}.unacked")


# --- measurements -------------------------------------------------------------------------

@contextmanager
def worker_process(system: Any, expected: int, timeout: float) -> Iterator[Invocations]:
    invocations = Invocations(tempfile.mktemp(suffix=".json"), expected)
    process = FORK.Process(target=system.worker, args=(invocations,), daemon=False)
    process.start()
    try:
        yield invocations
    finally:
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(30)


def measure_latency(send: Callable[[], list[str]], group: int, system: Any, rate: int,
                    seconds: float) -> dict[str, Any]:
    """Call `send` (which publishes `group` messages) on an absolute schedule that adds up to
    `rate` messages/s, from several threads, while one worker process consumes."""
    count = int(rate * seconds) // group * group
    sent: dict[str, tuple[float, float]] = {}
    with worker_process(system, count, timeout=seconds + 60) as invocations:
        time.sleep(3.0)  # let the worker connect and settle
        publishers = 4
        start = time.time() + 0.2
        lock = threading.Lock()

        def publisher(index: int) -> None:
            for n in range(index, count // group, publishers):
                due = start + n * group / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                begun = time.time()
                message_ids = send()
                accepted = time.time()
                with lock:
                    for message_id in message_ids:
                        sent[message_id] = (begun, accepted)

        threads = [threading.Thread(target=publisher, args=(i,)) for i in range(publishers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - start
    seen = load_invocations(invocations.path)
    os.unlink(invocations.path)
    from_accepted = [(seen[m] - acc) * 1000 for m, (_, acc) in sent.items() if m in seen]
    from_begun = [(seen[m] - beg) * 1000 for m, (beg, _) in sent.items() if m in seen]
    return {"sent": len(sent), "delivered": len(from_accepted), "rate": len(sent) / elapsed,
            "accepted": percentiles(from_accepted), "begun": percentiles(from_begun)}


def measure_throughput(system: Any, messages: int) -> dict[str, Any]:
    system.preload(messages)
    with worker_process(system, messages, timeout=300) as invocations:
        pass
    seen = sorted(load_invocations(invocations.path).values())
    os.unlink(invocations.path)
    if len(seen) < 2:
        return {"delivered": len(seen), "per_s": 0.0}
    return {"delivered": len(seen), "per_s": (len(seen) - 1) / (seen[-1] - seen[0])}


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def bench_database() -> AbstractContextManager[str]:
    """A database for one benchmark run, dropped afterwards."""
    from models.database import temporary_database

    return temporary_database(ADMIN_DATABASE_URL, "mqbench")


def purge_namespace(redis: Redis, namespace: str) -> None:
    keys = list(redis.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        redis.delete(*keys[start:start + 500])


def latency_row(label: str, latency: dict[str, Any], key: str = "accepted") -> str:
    figures = latency[key]
    return (f"  {label:<44} {latency['rate']:6.0f}/s  {latency['delivered']:5d}/"
            f"{latency['sent']:<5d}  p50 {figures['p50']:7.2f}  p95 {figures['p95']:7.2f}  "
            f"p99 {figures['p99']:7.2f} ms")


def throughput_row(results: list[dict[str, Any]]) -> str:
    rates = [r["per_s"] for r in results]
    return (f"  {'no-op throughput, one worker process':<44} {statistics.median(rates):8.0f} "
            f"messages/s median of {len(rates)} rounds "
            f"({', '.join(f'{r:.0f}' for r in rates)})")


def latencies_mq(system: MQSystem, args: argparse.Namespace) -> list[str]:
    broker_path = measure_latency(lambda: [system.append_one()], 1, system, args.rate,
                                  args.seconds)
    full = measure_latency(lambda: system.publish_group(10), 10, system, args.rate,
                           args.seconds)
    return [f"{system.name}  (latency: publish accepted -> handler invoked)",
            latency_row("XADD accepted (the broker step of a publish)", broker_path),
            latency_row("API publish flow, batches of 10 every 10 ms", full),
            latency_row("  same, measured from the publish call start", full, "begun")]


def latencies_peer(system: Any, args: argparse.Namespace) -> list[str]:
    latency = measure_latency(lambda: [system.publish_one()], 1, system, args.rate,
                              args.seconds)
    return [system.name, latency_row("send() accepted", latency)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds, interleaved between the systems")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--only", choices=("mq", "dramatiq", "celery"), action="append")
    args = parser.parse_args()
    only = args.only or ["mq", "dramatiq", "celery"]
    print(f"delivery bench: {args.rate} messages/s for {args.seconds:g}s; throughput over "
          f"{args.messages} messages x {args.rounds} rounds; {args.threads} worker threads; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    with bench_database() as database_url:
        systems: dict[str, Any] = {}
        try:
            if "mq" in only:
                systems["mq"] = MQSystem(database_url, args.threads)
            if "dramatiq" in only:
                systems["dramatiq"] = DramatiqSystem(args.threads)
            if "celery" in only:
                systems["celery"] = CelerySystem(args.threads)
            lines = {key: (latencies_mq(system, args) if key == "mq"
                           else latencies_peer(system, args))
                     for key, system in systems.items()}
            rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in systems}
            for _ in range(args.rounds):
                for key, system in systems.items():
                    rounds[key].append(measure_throughput(system, args.messages))
        finally:
            for system in systems.values():
                system.close()
    print()
    for key in systems:
        print("\n".join(lines[key]))
        print(throughput_row(rounds[key]))


if __name__ == "__main__":
    main()
