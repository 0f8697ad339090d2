"""Publish throughput and latency, next to the machine's ceiling measured in the same run.

    python bench/publish.py [--seconds 10] [--connections 16] [--rounds 3]
                            [--rate 1000] [--open-seconds 10]

Starts the API with the Procfile's `web` command (gunicorn) on a fresh PostgreSQL database
and a private Redis namespace, and `bench/ceiling.py` — a bare Flask endpoint doing one
INSERT and one XADD — under the same gunicorn command line. Before anything else it times
INSERT + COMMIT of one small row from one connection: the commits/s this machine's
PostgreSQL can do at all. Then, with `wrk` (Debian package `wrk`):

- single publishes: `--rounds` x (a service run, a ceiling run), alternating so that a
  change of the machine's load hits both alike; the median of each and every run;
- batches of 1,000 messages (4 connections), the service only.

Every wrk run also reads the server's CPU time (gunicorn master and workers) from /proc,
per request. Last, an open-loop run: one `mq worker` (the Procfile's `worker` command)
delivers a webhook subscription to a sink of this script while publishes are sent at a
fixed `--rate` whatever the answers (bench/openloop.py); it prints the publish round trip
and publish -> webhook latency, both from each publish's due time.

Environment: `BENCH_DATABASE_URL` (an admin URL of a PostgreSQL server, default local),
`BENCH_REDIS_URL` (default local). Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.openloop import Sink, run_open_loop, summarize, webhook_sink  # noqa: E402
from broker.connection import connect  # noqa: E402
from models import Database, upgrade  # noqa: E402
from models.database import temporary_database  # noqa: E402
from models.tenancy import create_tenant  # noqa: E402
from mq.settings import Settings  # noqa: E402
from mq.urls import libpq_url  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
API = "/api/v1/mq"
OPEN_TOPIC = "bench-open"
OPEN_CONNECTIONS = 32
#: How long the open-loop run waits for answers, and then for deliveries, after its last
#: publish was due.
GRACE_S = 10.0
FLUSH_SECONDS = 3.0
QUIET_LOAD = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [[{body}]]
"""


# --- processes ------------------------------------------------------------------------------

@dataclass
class Started:
    """A Procfile process in a process group of its own (gunicorn's workers are in it too);
    its output goes to `log`."""

    pgid: int
    log: Path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Served:
    base: str
    process: Started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"Procfile has no {name} process")


def web_command(app_target: str) -> str:
    """The Procfile's `web` line (`mq api`), optionally serving another app."""
    return f"{procfile_command('web')} --app {shlex.quote(app_target)}"


@contextmanager
def started(command: str, env: dict[str, str]) -> Iterator[Started]:
    """Run `command` (a Procfile line) with `env`; stops its whole process group afterwards."""
    fd, log = tempfile.mkstemp(prefix="mqbench-", suffix=".log")
    process = subprocess.Popen(
        command, shell=True, cwd=ROOT, start_new_session=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT),
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=fd, stderr=subprocess.STDOUT,
    )
    os.close(fd)
    try:
        yield Started(process.pid, Path(log))
    finally:
        stop(process)
        Path(log).unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group, SIGKILL to whatever of it is left after 30 s or after the
    leader exited."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextmanager
def served(app_target: str, env: dict[str, str]) -> Iterator[Served]:
    """Run the Procfile web command for `app_target` on a free port."""
    port = free_port()
    with started(web_command(app_target), {**env, "PORT": str(port)}) as process:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, process)
        yield Served(base, process)


def wait_until_up(base: str, process: Started) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server at {base} did not start:\n{process.tail()}")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the living processes of group `pgid` (fields 14-17 of
    /proc/<pid>/stat: their own, and that of their children already reaped, so that a
    gunicorn worker replaced during a run still counts)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


# --- the machine ----------------------------------------------------------------------------

def commit_rate(db_url: str, seconds: float) -> dict[str, float]:
    """INSERT + COMMIT of one small row, in a loop on one connection: how many durable
    commits per second this PostgreSQL does at all — the floor under one publish."""
    connection = psycopg2.connect(libpq_url(db_url))
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_flush (id bigserial PRIMARY KEY, n integer)")
            connection.commit()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                cursor.execute("INSERT INTO bench_flush (n) VALUES (%s)", (count,))
                connection.commit()
                count += 1
            elapsed = time.perf_counter() - start
    finally:
        connection.close()
    return {"per_s": count / elapsed, "us": elapsed * 1e6 / count}


# --- closed loop: wrk -----------------------------------------------------------------------

def wrk(url: str, key: str, body: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk against `url` with a POST body; returns requests, requests/s, p50/p99 ms,
    errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(key=key, body=body))
    try:
        output = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, float]:
    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = float(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rps, "requests": requests, "p50": ms("50"), "p99": ms("99"),
            "errors": float(errors.group(1)) if errors else 0.0}


def loaded(server: Served, path: str, key: str, body: str, seconds: int,
           connections: int) -> dict[str, float]:
    """One wrk run, with the server's CPU µs per request."""
    before = group_cpu_s(server.process.pgid)
    result = wrk(server.base + path, key, body, seconds, connections)
    cpu = group_cpu_s(server.process.pgid) - before
    result["cpu_us"] = cpu * 1e6 / result["requests"] if result["requests"] else math.nan
    return result


def single_body() -> str:
    return json.dumps({"topic": "bench", "payload": {"order": 1234, "amount": 99.5,
                                                     "customer": "c-42"}})


def batch_body(size: int) -> str:
    messages = [{"payload": {"order": i, "amount": 99.5}, "key": f"k{i % 16}"}
                for i in range(size)]
    return json.dumps({"topic": "bench", "messages": messages})


def alternate(service: Served, ceiling: Served, key: str,
              args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    """`--rounds` x (service run, ceiling run) of single publishes."""
    return [{"service": loaded(service, API + "/publish", key, single_body(), args.seconds,
                               args.connections),
             "ceiling": loaded(ceiling, "/publish", "-", single_body(), args.seconds,
                               args.connections)}
            for _ in range(args.rounds)]


# --- open loop: publish -> webhook ----------------------------------------------------------

def open_id(index: int) -> str:
    return f"open-{index:08d}"


def open_body(index: int) -> bytes:
    """A publish of ~100 bytes of payload."""
    return json.dumps({"topic": OPEN_TOPIC, "message_id": open_id(index),
                       "payload": {"order": index, "amount": 99.5, "customer": "c-42",
                                   "sku": "sku-000123", "note": "open-loop benchmark"}}).encode()


def subscribe(api: httpx.Client, sink: Sink) -> None:
    api.post("/queues", json={"name": OPEN_TOPIC}).raise_for_status()
    api.post("/subscriptions", json={
        "topic": OPEN_TOPIC, "consumer_group": "sink", "consumer_name": "sink-1",
        "subscription_type": "webhook",
        "handler_config": {"type": "http", "url": sink.url + "/hook"},
    }).raise_for_status()


def wait_for_worker(api: httpx.Client, sink: Sink, worker: Started) -> None:
    """Publish a probe and wait until the sink got it: the worker is up and subscribed."""
    api.post("/publish", json={"topic": OPEN_TOPIC, "message_id": "probe",
                               "payload": {"probe": True}}).raise_for_status()
    if not sink.wait_for(1, timeout=60):
        raise SystemExit(f"the worker delivered no probe within 60 s:\n{worker.tail()}")


def measure_open_loop(service: Served, env: dict[str, str], key: str,
                      args: argparse.Namespace) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"}
    with (httpx.Client(base_url=service.base + API, headers=headers, timeout=30) as api,
          webhook_sink() as sink):
        subscribe(api, sink)
        with started(procfile_command("worker"), env) as worker:
            wait_for_worker(api, sink, worker)
            cpu_before = group_cpu_s(service.process.pgid), group_cpu_s(worker.pgid)
            run = run_open_loop(service.base, API + "/publish", headers, open_body, args.rate,
                                args.open_seconds, OPEN_CONNECTIONS, GRACE_S)
            published = sum(1 for a in run.answers if a is not None and a.ok)
            sink.wait_for(published + 1, timeout=GRACE_S)  # + 1: the probe
            api_cpu = group_cpu_s(service.process.pgid) - cpu_before[0]
            worker_cpu = group_cpu_s(worker.pgid) - cpu_before[1]
            figures = summarize(run, open_id, sink.arrivals())
    figures["api_cpu_us"] = api_cpu * 1e6 / published if published else math.nan
    figures["worker_cpu_us"] = (worker_cpu * 1e6 / figures["delivered"]
                                if figures["delivered"] else math.nan)
    return figures


# --- the run --------------------------------------------------------------------------------

def prepare_service(db_url: str) -> str:
    """Schema and a tenant; returns the tenant's admin key."""
    upgrade(db_url)
    database = Database(db_url)
    with database.session() as session:
        _, key = create_tenant(session, "bench")
    database.dispose()
    return key


def prepare_ceiling(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS bench_ceiling ("
                                "id bigserial PRIMARY KEY, message_id varchar(64) NOT NULL, "
                                "payload jsonb, published_at timestamptz DEFAULT now())"))
    engine.dispose()


def measure(db_url: str, namespace: str, args: argparse.Namespace) -> dict[str, Any]:
    key = prepare_service(db_url)
    prepare_ceiling(db_url)
    env = {"DATABASE_URL": db_url, "REDIS_URL": REDIS_URL, "REDIS_NAMESPACE": namespace,
           "MQ_WEBHOOK_ALLOW_PRIVATE": "true", "LOG_LEVEL": "WARNING"}
    ceiling_env = {"DATABASE_URL": libpq_url(db_url), "REDIS_URL": REDIS_URL,
                   "CEILING_STREAM": f"{namespace}:ceiling"}
    with served("api:create_app()", env) as service:
        httpx.post(service.base + API + "/queues", json={"name": "bench"},
                   headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        with served("bench.ceiling:create_app()", ceiling_env) as ceiling:
            rounds = alternate(service, ceiling, key, args)
        batch = loaded(service, API + "/publish/batch", key, batch_body(1000), args.seconds, 4)
        open_loop = measure_open_loop(service, env, key, args)
    return {"rounds": rounds, "batch": batch, "open": open_loop}


def cleanup_redis(namespace: str) -> None:
    client = connect(Settings(redis_url=REDIS_URL))
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk, single publishes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="single publishes: alternating service and ceiling runs")
    parser.add_argument("--rate", type=float, default=1000, help="open loop, publishes/s")
    parser.add_argument("--open-seconds", type=float, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    # A plain `kill` of the bench still stops what it started (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()
    namespace = f"mqbench{uuid.uuid4().hex[:8]}"
    try:
        with temporary_database(ADMIN_URL, "mqbench") as db_url:
            header(args, load, commit_rate(db_url, FLUSH_SECONDS))
            results = measure(db_url, namespace, args)
    finally:
        cleanup_redis(namespace)
    report(results, args)


# --- the report -----------------------------------------------------------------------------

def header(args: argparse.Namespace, load: tuple[float, float, float],
           flush: dict[str, float]) -> None:
    print(f"publish benchmark: wrk runs of {args.seconds}s, {args.connections} connections, "
          f"rounds: {args.rounds}; open loop {args.rate:g}/s for {args.open_seconds:g}s over "
          f"{OPEN_CONNECTIONS} connections")
    print(f"web command: {web_command('api:create_app()')}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; PostgreSQL INSERT + COMMIT, one connection: "
          f"{flush['per_s']:.0f} commits/s ({flush['us']:.0f} µs each)")
    if load[0] > QUIET_LOAD:
        print(f"WARNING: 1-minute load average {load[0]:.2f} > {QUIET_LOAD}: "
              f"the machine is not quiet, figures will be noisy")
    sys.stdout.flush()


def row(label: str, service: float, ceiling: float | None = None, ratio: bool = False,
        runs: str = "", digits: int = 0) -> str:
    bare = "" if ceiling is None else f"{ceiling:.{digits}f}"
    share = f"{service / ceiling:.2f}" if ratio and ceiling else ""
    return f"{label:40}{service:>10.{digits}f}{bare:>10}{share:>7}   {runs}".rstrip()


def runs_of(rounds: list[dict[str, dict[str, float]]], figure: str, digits: int) -> str:
    def values(side: str) -> str:
        return " ".join(f"{r[side][figure]:.{digits}f}" for r in rounds)

    return f"{values('service')} | {values('ceiling')}"


def median(rounds: list[dict[str, dict[str, float]]], side: str, figure: str) -> float:
    return statistics.median(r[side][figure] for r in rounds)


def ms(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.1f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    rounds, batch, loop = results["rounds"], results["batch"], results["open"]
    print(f"{'':40}{'service':>10}{'ceiling':>10}{'ratio':>7}   each run (service | ceiling)")
    for label, figure, digits, ratio in (("requests/s", "rps", 0, True),
                                         ("p50 ms", "p50", 2, False),
                                         ("p99 ms", "p99", 2, False),
                                         ("server CPU µs/request", "cpu_us", 0, True)):
        print(row(f"single publish, {label}", median(rounds, "service", figure),
                  median(rounds, "ceiling", figure), ratio, runs_of(rounds, figure, digits),
                  digits))
    print(row("single publish, non-2xx (all runs)",
              sum(r["service"]["errors"] for r in rounds),
              sum(r["ceiling"]["errors"] for r in rounds)))
    print(row("batch of 1,000, messages/s", batch["rps"] * 1000))
    print(f"{'batch of 1,000, p50 / p99 ms':40}{batch['p50']:>10.1f} / {batch['p99']:.1f}"
          f"   non-2xx: {batch['errors']:.0f}")
    print(row("batch of 1,000, server CPU µs/message", batch["cpu_us"] / 1000))
    print(f"open loop, {loop['offered']} publishes due at a fixed rate, "
          f"{OPEN_CONNECTIONS} connections; times from each publish's due time")
    print(f"{'  publishes/s offered / achieved':40}"
          f"{args.rate:>10.0f} / {loop['rate']:.0f}")
    print(f"{'  non-2xx / failed / unanswered':40}{loop['non2xx']:>10} / {loop['failed']} / "
          f"{loop['unanswered']}")
    print(f"{'  publish RTT p50 / p99 ms':40}{ms(loop['rtt_p50']):>10} / {ms(loop['rtt_p99'])}")
    print(f"{'  publish -> webhook p50 / p99 / max ms':40}{ms(loop['hook_p50']):>10} / "
          f"{ms(loop['hook_p99'])} / {ms(loop['hook_max'])}")
    print(f"{'  delivered / published, duplicates':40}{loop['delivered']:>10} / "
          f"{loop['published']}, {loop['duplicates']}")
    print(f"{'  CPU µs/message, API / worker':40}{loop['api_cpu_us']:>10.0f} / "
          f"{loop['worker_cpu_us']:.0f}")


if __name__ == "__main__":
    main()
