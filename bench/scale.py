"""Delivery throughput against the number of worker processes, on a single Redis and on a
Redis Cluster, in one run.

    python bench/scale.py [--messages 60000] [--threads 8] [--quick]

One topic of 12 partitions, one subscription whose handler is the no-op `function`
`bench.scale:noop`, and 1, 2 and 4 worker processes (`mq worker`, the Procfile's worker
command, each started on its own). Each (backend, worker count) pair gets a fresh Redis
namespace and its own topic, and `--messages` messages published through `/publish/batch`
while no worker runs (the API in process: `api.create_app(settings)` and Flask's test client).
Then the workers start; once every one has beaten and waits in its consumer's blocking XREAD
(start-up excluded: see `consuming`), the subscription is created through the API from
the earliest entry (the workers learn of it on the control stream, which their blocking reads
watch), and the clock runs from that call until the subscription's `delivered` counter
(`Keys.subscription_counters`) reaches the number published: throughput = messages / that
window. Subscribing last lets every worker start on the backlog at once; subscribed before the
workers started, the first worker up would drain alone while the others were still starting.
The topic and subscription are deleted after each pair (later workers load every subscription
of the database).

Backends: the Redis of `BENCH_REDIS_URL`, and a Redis Cluster of 3 masters + 3 replicas started
for the run from the machine's `redis-server` (`tests.cluster.RedisClusterProcesses`). The
pairs run interleaved (1 worker on each backend, then 2, then 4), so that a change of the
machine's load hits both alike. `BENCH_DATABASE_URL`: an admin URL of a PostgreSQL server
(a database is created and dropped). Prints figures; never asserts.

`--quick`: 2,000 messages, 1 and 2 workers only, for a smoke check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from broker.connection import RedisClient
    from mq.settings import Settings
    from tests.cluster import RedisClusterProcesses

MQ = Path(sys.executable).parent / "mq"
API = "/api/v1/mq"
PARTITIONS = 12
WORKER_COUNTS = (1, 2, 4)
QUICK_WORKER_COUNTS = (1, 2)
DEFAULT_MESSAGES = 60_000
QUICK_MESSAGES = 2_000
BATCH = 1_000
#: A step to more workers that adds less than this share of throughput is no growth.
GROWTH = 1.15
#: A pair is given up when its delivered count does not move for this long (longer than a
#: worker's periodic resync, 30 s, which would find a subscription it was not told of).
STALL_S = 45.0
#: ... or when its workers are not all serving this long after they were started.
START_TIMEOUT_S = 90.0
POLL_S = 0.01
#: A first delivery later than this after subscribing: a worker missed the control event.
FIRST_DELIVERY_S = 2.0
#: A timed window shorter than this gives a noisy figure.
SHORT_WINDOW_S = 3.0
#: The cluster's ports are searched from here (the test suite's clusters start at 7100).
CLUSTER_BASE_PORT = 7500
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_PASSWORD",
                     "REDIS_NAMESPACE", "MQ_FUNCTION_MODULES", "PORT", "LOG_FORMAT",
                     "LOG_LEVEL", "METRICS_ENABLED")
#: Worker log lines worth reporting.
NOTABLE = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def noop(payload: Any, headers: dict[str, str]) -> None:
    """The subscription's handler (`bench.scale:noop`): does nothing."""


# --- one run: a backend and a worker count ------------------------------------------------

@dataclass
class Backend:
    name: str
    settings: Settings
    cluster: RedisClusterProcesses | None = None


@dataclass
class Run:
    backend: str
    workers: int
    messages: int
    publish_per_s: float = float("nan")
    #: Launch of the workers -> the last one's first heartbeat (not timed).
    startup_s: float = float("nan")
    #: The timed window: subscribing -> the last delivery.
    window_s: float = float("nan")
    #: Of which the subscription's creation (the API call) ...
    subscribe_s: float = float("nan")
    #: ... and the time to the first delivery.
    first_s: float = float("nan")
    delivered: int = 0
    #: Workers that read from the subscription's partitions.
    took_part: int = 0
    lag: int | None = None
    pending: int | None = None
    failure: str | None = None
    notable: list[str] = field(default_factory=list)

    @property
    def suspect(self) -> str | None:
        """Why the figure does not measure `workers` workers delivering, if it does not."""
        if self.first_s > FIRST_DELIVERY_S:
            return (f"first delivery {self.first_s:.1f} s after subscribing: a worker missed "
                    "the control event")
        if self.window_s == self.window_s and self.took_part < self.workers:
            return f"only {self.took_part} of {self.workers} workers read the subscription"
        return None

    @property
    def per_s(self) -> float:
        if self.failure or self.suspect or not self.window_s > 0:
            return float("nan")
        return self.messages / self.window_s


@dataclass
class Api:
    """The API in process, on one backend's settings, with a tenant's admin key."""

    app: Flask
    client: FlaskClient
    key: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.client.open(API + path, method=method, json=body,
                                    headers={"Authorization": f"Bearer {self.key}"})
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.get_data()!r}")
        return response.get_json(silent=True)

    def close(self) -> None:
        services = self.app.extensions["mq"]
        services.writer.stop()
        services.redis.close()
        services.database.dispose()


@contextmanager
def api_on(settings: Settings, key: str) -> Iterator[Api]:
    from api import create_app

    app = create_app(settings)
    api = Api(app, app.test_client(), key)
    try:
        yield api
    finally:
        api.close()


def group_members(pgid: int) -> list[int]:
    """The pids of the living processes of process group `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":  # pgrp; not a zombie
                    members.append(int(entry.name))
    return members


def worker_env(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    return {**env, **settings.as_environ(), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


@dataclass
class Workers:
    """`count` `mq worker` processes, each in a process group of its own (with its record
    writer), logging to files in `directory`."""

    settings: Settings
    count: int
    threads: int
    directory: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Their broker instances (consumer names), once they beat.
    instances: set[str] = field(default_factory=set)

    def start(self) -> None:
        env = worker_env(self.settings)
        for index in range(self.count):
            with (self.directory / f"worker-{index}.log").open("wb") as log:
                self.procs.append(subprocess.Popen(
                    [str(MQ), "worker", "--threads", str(self.threads)], cwd=ROOT, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True))

    def exited(self) -> list[str]:
        return [f"worker pid {p.pid} exited with {p.returncode}" for p in self.procs
                if p.poll() is not None]

    def stop(self) -> None:
        """SIGTERM to each worker; SIGKILL to the worker, and to what is left of its group
        (its record writer), after 40 s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=40)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            # The group id stays taken while a member lives: it is still this worker's group.
            if group_members(proc.pid):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def notable(self, limit: int = 8) -> list[str]:
        """Warnings, errors and tracebacks of the workers' logs (the first `limit`)."""
        lines = []
        for path in sorted(self.directory.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if NOTABLE.search(line):
                    lines.append(f"{path.stem}: {line[:300]}")
        return lines if len(lines) <= limit else [*lines[:limit],
                                                  f"... {len(lines) - limit} more"]

    def tails(self, lines: int = 25) -> str:
        return "\n".join(f"--- {path.name}\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.directory.glob("worker-*.log")))


def instances(redis: RedisClient, settings: Settings) -> dict[int, str]:
    """pid -> broker instance of the workers that have beaten in this namespace."""
    from broker.keys import Keys

    beats = redis.hgetall(Keys.of(settings).processes)
    return {beat["pid"]: beat.get("instance", "") for beat in map(json.loads, beats.values())
            if beat.get("kind") == "worker"}


def consumers(redis: RedisClient, stream: str, group: str) -> set[str]:
    """The consumer names of `group` on `stream` (none when either is missing)."""
    from redis.exceptions import ResponseError

    try:
        return {entry["name"] for entry in redis.xinfo_consumers(stream, group)}
    except ResponseError:
        return set()


def socket_ports(pid: int) -> set[int]:
    """The local TCP ports of process `pid`'s sockets (from /proc)."""
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def server_settings(settings: Settings) -> list[Settings]:
    """One single-server `Settings` per Redis server of `settings` (each cluster node)."""
    if not settings.redis_cluster_nodes:
        return [settings]
    return [replace(settings, redis_cluster_nodes=(), redis_url=f"redis://{node}/0")
            for node in settings.redis_cluster_nodes]


def blocked_readers(servers: list[Settings]) -> set[int]:
    """The client ports of the connections blocked in XREAD on any of `servers`."""
    from broker.connection import connect

    ports = set()
    for server in servers:
        client = connect(server)
        try:
            for entry in client.client_list():
                if entry.get("cmd") == "xread" and "b" in entry.get("flags", ""):
                    ports.add(int(str(entry["addr"]).rsplit(":", 1)[1]))
        finally:
            client.close()
    return ports


def consuming(pids: set[int], servers: list[Settings]) -> bool:
    """Whether every worker in `pids` waits in its consumer's blocking XREAD, which watches
    the control stream from the position its consumer took when it started. A worker beats
    before its consumer starts: a subscription created between the two reaches it only with
    its periodic resync (30 s), so a heartbeat alone is not enough to subscribe after."""
    blocked = blocked_readers(servers)
    return all(socket_ports(pid) & blocked for pid in pids)


def publish(api: Api, topic: str, count: int) -> float:
    """Publish `count` small messages in batches; returns messages/s."""
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        api.call("POST", "/publish/batch", {"topic": topic, "messages": [
            {"payload": {"n": n}} for n in range(start, min(count, start + BATCH))]})
    return count / (time.perf_counter() - started)


def measure(backend: Backend, workers: int, messages: int, threads: int,
            tenant: Tenant) -> Run:
    """One pair: fresh namespace and topic; publish; start the workers; once all serve,
    subscribe from the earliest entry and time the drain."""
    from broker.connection import connect

    settings = replace(backend.settings, redis_namespace=f"mqscale{uuid.uuid4().hex[:8]}")
    run = Run(backend.name, workers, messages)
    redis = connect(settings)
    directory = Path(tempfile.mkdtemp(prefix="mq-scale-"))
    fleet = Workers(settings, workers, threads, directory)
    topic = f"scale-{workers}-{uuid.uuid4().hex[:8]}"
    try:
        with api_on(settings, tenant.key) as api:
            topic_id = api.call("POST", "/queues",
                                {"name": topic, "partition_count": PARTITIONS})["id"]
            try:
                run.publish_per_s = publish(api, topic, messages)
                start_all(run, fleet, redis, settings)
                if run.failure is None:
                    subscription = drain(run, fleet, api, redis, settings, topic)
                    run.took_part = took_part(redis, settings, topic_id, tenant.id,
                                              fleet.instances)
                    fleet.stop()
                    stats = api.call("GET", f"/subscriptions/{subscription}")["stats"]
                    run.lag, run.pending = stats["lag"], stats["pending"]
            finally:
                fleet.stop()
                # The workers of later pairs load every subscription of the database.
                for found in api.call("GET", f"/subscriptions?topic={topic}")["items"]:
                    api.call("DELETE", f"/subscriptions/{found['id']}")
                api.call("DELETE", f"/queues/{topic}")
    except Exception as error:  # a failed pair is reported; the others still run
        run.failure = run.failure or f"{type(error).__name__}: {error}"
    finally:
        fleet.stop()
        run.notable = fleet.notable()
        if run.failure:
            print(f"\n{backend.name}, {workers} workers: {run.failure}\n{fleet.tails()}",
                  file=sys.stderr)
        shutil.rmtree(directory, ignore_errors=True)
        clear(redis, backend, settings)
    return run


def took_part(redis: RedisClient, settings: Settings, topic_id: str, tenant_id: str,
              instances: set[str]) -> int:
    """How many of the worker `instances` read from the subscription's partitions."""
    from broker.keys import Keys, group_name

    names: set[str] = set()
    for stream in Keys.of(settings).streams(topic_id, PARTITIONS):
        names |= consumers(redis, stream, group_name(tenant_id, "noop"))
    return len({name.rpartition("@")[2] for name in names} & instances)


def start_all(run: Run, fleet: Workers, redis: RedisClient, settings: Settings) -> None:
    """Start the workers; wait until every one beats and waits for stream entries."""
    launched = time.monotonic()
    fleet.start()
    pids = {proc.pid for proc in fleet.procs}
    servers = server_settings(settings)
    while True:
        beating = instances(redis, settings)
        if pids <= beating.keys():
            fleet.instances = {beating[pid] for pid in pids}
            if consuming(pids, servers):
                break
        if exited := fleet.exited():
            run.failure = "; ".join(exited)
            return
        if time.monotonic() - launched > START_TIMEOUT_S:
            run.failure = f"workers not all serving after {START_TIMEOUT_S:.0f} s"
            return
        time.sleep(0.05)
    run.startup_s = time.monotonic() - launched


def drain(run: Run, fleet: Workers, api: Api, redis: RedisClient, settings: Settings,
          topic: str) -> str:
    """Subscribe (from the earliest entry) and follow the subscription's delivered count
    until every message is delivered; returns the subscription's id."""
    from broker.keys import Keys

    started = time.monotonic()
    subscription = api.call("POST", "/subscriptions", {
        "topic": topic, "consumer_group": "noop", "consumer_name": "noop",
        "subscription_type": "redis_consumer", "offset_reset_policy": "earliest",
        "max_retry_attempts": 0,
        "handler_config": {"type": "function", "function": "bench.scale:noop"}})["id"]
    run.subscribe_s = time.monotonic() - started
    counters = Keys.of(settings).subscription_counters(subscription)
    seen, moved = 0, started
    while True:
        delivered = int(redis.hget(counters, "delivered") or 0)
        now = time.monotonic()
        if delivered and run.first_s != run.first_s:  # still nan
            run.first_s = now - started
        if delivered != seen:
            seen, moved = delivered, now
        run.delivered = delivered
        if delivered >= run.messages:
            run.window_s = now - started
            return subscription
        if exited := fleet.exited():
            run.failure = "; ".join(exited)
            return subscription
        if now - moved > STALL_S:
            run.failure = (f"stalled: {delivered} of {run.messages} delivered, no progress "
                           f"for {STALL_S:.0f} s")
            return subscription
        time.sleep(POLL_S)


def clear(redis: RedisClient, backend: Backend, settings: Settings) -> None:
    """Remove the pair's keys (on the cluster: every key; it is this run's own)."""
    from redis import Redis

    from bench.deliver import purge_namespace

    with suppress(Exception):
        if backend.cluster is not None:
            backend.cluster.flushall()
        elif isinstance(redis, Redis):
            purge_namespace(redis, settings.redis_namespace)
    redis.close()


# --- the machine --------------------------------------------------------------------------

def redis_version(settings: Settings) -> str:
    from broker.connection import connect

    client = connect(settings)
    try:
        info = client.info("server")
    finally:
        client.close()
    if all(isinstance(value, dict) for value in info.values()):  # a cluster: one per node
        versions = sorted({str(node["redis_version"]) for node in info.values()})
        return "/".join(versions)
    return str(info["redis_version"])


def postgres_version(database_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Tenant:
    id: str
    key: str


def create_tenant(database_url: str) -> Tenant:
    """Schema and a tenant with its admin key."""
    from models import Database, upgrade
    from models.tenancy import create_tenant as create

    upgrade(database_url)
    database = Database(database_url, pool_size=1)
    try:
        with database.session() as session:
            tenant, key = create(session, "bench")
            return Tenant(tenant.id, key)
    finally:
        database.dispose()


# --- the report ---------------------------------------------------------------------------

def figure(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def table(runs: list[Run], backends: list[str], counts: tuple[int, ...]) -> list[str]:
    by = {(r.backend, r.workers): r for r in runs}
    head = f"{'workers':>8}" + "".join(f"{name + ' msg/s':>24}{'x1':>7}" for name in backends)
    lines = [head]
    for count in counts:
        row = f"{count:>8}"
        for name in backends:
            run, base = by.get((name, count)), by.get((name, counts[0]))
            rate = run.per_s if run else float("nan")
            ratio = rate / base.per_s if base and base.per_s > 0 else float("nan")
            mark = " !" if run and (run.failure or run.suspect) else ""
            row += f"{figure(rate) + mark:>24}{figure(ratio, 2):>7}"
        lines.append(row)
    return lines


def growth(name: str, rates: dict[int, float], cpus: int) -> str:
    """Where adding worker processes stops adding throughput, from the measured rates."""
    counts = sorted(count for count, rate in rates.items() if rate > 0)
    if len(counts) < 2:
        return f"{name}: too few measured worker counts to tell"
    steps, stop = [], None
    for before, after in itertools.pairwise(counts):
        gain = rates[after] / rates[before]
        steps.append(f"{before}->{after} x{gain:.2f}")
        if stop is None and gain < GROWTH:
            stop = before
    where = (f"growth stops at {stop} worker process{'es' if stop > 1 else ''}"
             if stop is not None else
             f"still growing at {counts[-1]} worker processes (the most measured)")
    if stop is not None:
        where += (f" (= this machine's {cpus} CPUs)" if stop == cpus
                  else f" (this machine has {cpus} CPUs)")
    return (f"{name}: {', '.join(steps)} (a step adding < {(GROWTH - 1) * 100:.0f}% is no "
            f"growth): {where}")


def report(runs: list[Run], backends: list[str], counts: tuple[int, ...]) -> None:
    cpus = os.cpu_count() or 1
    print()
    print("\n".join(table(runs, backends, counts)))
    print("x1: throughput / that of 1 worker on the same backend; n/a: not measured; "
          "!: the run failed or is suspect (see below)")
    print()
    for name in backends:
        line = growth(name, {r.workers: r.per_s for r in runs if r.backend == name}, cpus)
        short = [r for r in runs if r.backend == name and r.window_s < SHORT_WINDOW_S]
        print(line + (f" -- not conclusive: {len(short)} timed window(s) under "
                      f"{SHORT_WINDOW_S:g} s" if short else ""))
    print()
    print("each run: publish msg/s (no worker running) | start-up s (launch -> all serving, "
          "not timed) | timed window s (of which: the subscribe call, and until the first "
          "delivery) | workers that read the subscription | lag / pending after")
    for run in runs:
        print(f"  {run.backend:<14}{run.workers} workers: {figure(run.publish_per_s):>6} | "
              f"{figure(run.startup_s, 1):>4} | {figure(run.window_s, 2):>6} "
              f"({figure(run.subscribe_s, 3)}, {figure(run.first_s, 3)}) | "
              f"{run.took_part}/{run.workers} | {run.lag} / {run.pending}"
              + (f" | FAILED: {run.failure} ({run.delivered} delivered)" if run.failure else ""))
        if run.suspect:
            print(f"    SUSPECT: {run.suspect}")
        if run.window_s < SHORT_WINDOW_S:
            print(f"    note: a timed window under {SHORT_WINDOW_S:g} s: use more --messages "
                  "for a steadier figure")
        for line in run.notable:
            print(f"    log: {line}")


# --- the run --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=None,
                        help=f"per run (default {DEFAULT_MESSAGES}; {QUICK_MESSAGES} with "
                             "--quick)")
    parser.add_argument("--threads", type=int, default=8, help="per worker process")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke check: {QUICK_MESSAGES} messages, 1 and 2 workers")
    args = parser.parse_args()
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    counts = QUICK_WORKER_COUNTS if args.quick else WORKER_COUNTS
    # A plain `kill` of the bench still stops what it started (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from bench.deliver import ADMIN_DATABASE_URL, REDIS_URL, bench_database
    from mq.settings import Settings
    from tests.cluster import RedisClusterProcesses

    load = os.getloadavg()
    began = time.monotonic()
    if missing := RedisClusterProcesses.missing_binaries():
        raise SystemExit(f"a Redis Cluster needs {', '.join(missing)} on PATH")
    cluster = RedisClusterProcesses(CLUSTER_BASE_PORT)
    runs: list[Run] = []
    names = ["single Redis", "Redis Cluster"]
    with bench_database() as database_url:
        try:
            cluster.start()
            base = Settings(database_url=database_url, redis_url=REDIS_URL,
                            mq_function_modules=("bench.scale",), metrics_enabled=False,
                            log_level="WARNING", log_format="text")
            backends = [Backend(names[0], base),
                        Backend(names[1],
                                replace(base, redis_cluster_nodes=tuple(cluster.nodes)),
                                cluster)]
            tenant = create_tenant(database_url)
            print(f"scale benchmark: 1 topic x {PARTITIONS} partitions, one no-op `function` "
                  f"subscription (bench.scale:noop), {messages} messages per run, "
                  f"{', '.join(map(str, counts))} `mq worker` processes of {args.threads} "
                  "threads each")
            print(f"machine: {os.cpu_count()} CPUs; load average before start {load[0]:.2f} "
                  f"{load[1]:.2f} {load[2]:.2f}; PostgreSQL {postgres_version(database_url)} "
                  f"({ADMIN_DATABASE_URL.rsplit('@', 1)[-1]})")
            print(f"backends: single Redis {redis_version(backends[0].settings)} ({REDIS_URL}); "
                  f"Redis Cluster {redis_version(backends[1].settings)} "
                  f"(3 masters + 3 replicas, {cluster.nodes[0]}..{cluster.nodes[-1]}, "
                  f"{base.redis_cluster_shards} shards)")
            print("timing: messages published first, no worker running; then the workers "
                  "start, and once every one beats and waits in its consumer's blocking "
                  "XREAD (start-up excluded) the subscription is created from the earliest "
                  "entry: the clock runs from that API call until its `delivered` counter "
                  "reaches the number published (msg/s = messages / that window)")
            sys.stdout.flush()
            for count in counts:
                for backend in backends:
                    run = measure(backend, count, messages, args.threads, tenant)
                    runs.append(run)
                    print(f"  {backend.name}, {count} worker(s): {figure(run.per_s)} msg/s"
                          + (f" FAILED: {run.failure}" if run.failure else "")
                          + (f" SUSPECT: {run.suspect}" if run.suspect else ""), flush=True)
        finally:
            from publishing.writer import GroupWriter

            GroupWriter.stop_all()
            cluster.stop()
    report(runs, names, counts)
    print(f"\nwhole run: {time.monotonic() - began:.0f} s; load average now "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
