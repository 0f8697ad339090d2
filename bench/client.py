"""The Python client's publish throughput: 16 producer threads through one `BatchPublisher`
next to the same 16 threads each calling `Client.publish`, on one running service.

    python bench/client.py [--seconds 10] [--threads 16] [--window 128] [--in-flight 1,2,4]

Starts the API with the Procfile's `web` command (gunicorn) on a fresh PostgreSQL database
and a private Redis namespace, as `bench/publish.py` does, and `bench/ceiling.py` (a bare
Flask endpoint doing one INSERT and one XADD) under the same command line. Then, each for
`--seconds`, with the same `--threads` threads in this process:

- single: each thread calls `client.publish()` in a loop (one request per message);
- ceiling: the same loop with a bare `httpx.Client.post` to the ceiling endpoint — what the
  machine does for one request per message with no service at all;
- batch: each thread calls `publisher.publish()` and keeps at most `--window` of its
  messages unacknowledged (it waits for its oldest future when it has that many); once per
  `--in-flight` value (the publisher's `max_in_flight`: 1 keeps the order of messages; more
  keep both gunicorn workers busy, and the API's group writer stores concurrent batches
  with one commit);
- bare batches: 2 threads posting batches of 1,000 messages (each with a `message_id`, as the
  client sends them) with bare httpx — what the service takes in batches without the client.

For each: messages/s, and time to acknowledgement (the `publish()` call until its answer or
its future resolved) at p50 / p99, with the CPU µs per message of the API (its process
group) and of this process, and how busy the machine's CPUs were (every process); at the
end the batch/single ratio (goal: at least 20x) and the PostgreSQL commits/s of one
connection (INSERT + COMMIT). Every message stored is counted
back from the topic's stats. The machine runs the service, PostgreSQL, Redis and these
threads on the same cores: the load average is printed with the figures.

Environment: `BENCH_DATABASE_URL`, `BENCH_REDIS_URL` (as bench/publish.py). Prints figures;
never asserts.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mq_client import BatchPublisher, Client  # noqa: E402

from bench.publish import (  # noqa: E402
    ADMIN_URL,
    API,
    FLUSH_SECONDS,
    QUIET_LOAD,
    REDIS_URL,
    Served,
    cleanup_redis,
    commit_rate,
    group_cpu_s,
    prepare_ceiling,
    prepare_service,
    served,
)
from models.database import temporary_database  # noqa: E402
from mq.urls import libpq_url  # noqa: E402

PAYLOAD = {"order": 1234, "amount": 99.5, "customer": "c-42", "sku": "sku-000123"}
GOAL = 20.0


@dataclass
class Run:
    """One side's figures."""

    label: str
    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    api_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    busy: float = 0.0  # share of the machine's CPU time in use (every process, both cores)
    requests: int | None = None  # batch requests sent, where counted
    stored: int | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered \
            else float("nan")

    def cpu_us(self, seconds: float) -> float:
        return seconds * 1e6 / self.messages if self.messages else float("nan")


def in_threads(threads: int, seconds: float, produce: Callable[[float, list[float]], int]
               ) -> tuple[int, list[float], float]:
    """Run `produce(deadline, latencies)` in `threads` threads started together; returns the
    messages they counted, every latency and the wall time until the last one finished."""
    start = threading.Barrier(threads + 1)
    results: list[tuple[int, list[float]]] = []

    def thread() -> None:
        latencies: list[float] = []
        start.wait()
        results.append((produce(time.perf_counter() + seconds, latencies), latencies))

    workers = [threading.Thread(target=thread) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return (sum(n for n, _ in results), [x for _, some in results for x in some],
            time.perf_counter() - began)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def measured(run: Run, server: Served, threads: int, seconds: float,
             produce: Callable[[float, list[float]], int]) -> Run:
    api_before, client_before = group_cpu_s(server.process.pgid), time.process_time()
    busy_before, total_before = cpu_ticks()
    run.messages, run.latencies, run.seconds = in_threads(threads, seconds, produce)
    run.api_cpu_s = group_cpu_s(server.process.pgid) - api_before
    run.client_cpu_s = time.process_time() - client_before
    busy, total = cpu_ticks()
    run.busy = (busy - busy_before) / max(1, total - total_before)
    return run


def single(client: Client, topic: str) -> Callable[[float, list[float]], int]:
    def produce(deadline: float, latencies: list[float]) -> int:
        count = 0
        while (began := time.perf_counter()) < deadline:
            client.publish(topic, PAYLOAD)
            latencies.append(time.perf_counter() - began)
            count += 1
        return count

    return produce


def bare(http: httpx.Client) -> Callable[[float, list[float]], int]:
    def produce(deadline: float, latencies: list[float]) -> int:
        count = 0
        while (began := time.perf_counter()) < deadline:
            http.post("/publish", json={"payload": PAYLOAD}).raise_for_status()
            latencies.append(time.perf_counter() - began)
            count += 1
        return count

    return produce


def raw_batches(http: httpx.Client, topic: str, size: int
                ) -> Callable[[float, list[float]], int]:
    """Batches of `size` messages (each with its own `message_id`, as the client sends them)
    posted with bare httpx: what the service takes in batches with no client machinery."""
    def produce(deadline: float, latencies: list[float]) -> int:
        count = 0
        while (began := time.perf_counter()) < deadline:
            messages = [{"payload": PAYLOAD, "message_id": uuid.uuid4().hex}
                        for _ in range(size)]
            http.post(f"{API}/topics/{topic}/publish", content=json.dumps(
                {"messages": messages}), headers={"Content-Type": "application/json"}
                      ).raise_for_status()
            latencies.extend([time.perf_counter() - began] * size)
            count += size
        return count

    return produce


def batched(publisher: BatchPublisher, window: int) -> Callable[[float, list[float]], int]:
    def produce(deadline: float, latencies: list[float]) -> int:
        unacked: collections.deque[concurrent.futures.Future[str]] = collections.deque()
        count = 0

        def acked(began: float) -> Callable[[concurrent.futures.Future[str]], None]:
            return lambda future: latencies.append(time.perf_counter() - began)

        while time.perf_counter() < deadline:
            if len(unacked) >= window:
                unacked.popleft().result()
            future = publisher.publish(PAYLOAD)
            future.add_done_callback(acked(time.perf_counter()))
            unacked.append(future)
            count += 1
        for future in unacked:
            future.result()
        return count

    return produce


def measure(db_url: str, namespace: str, args: argparse.Namespace) -> list[Run]:
    key = prepare_service(db_url)
    prepare_ceiling(db_url)
    env = {"DATABASE_URL": db_url, "REDIS_URL": REDIS_URL, "REDIS_NAMESPACE": namespace,
           "LOG_LEVEL": "WARNING"}
    ceiling_env = {"DATABASE_URL": libpq_url(db_url), "REDIS_URL": REDIS_URL,
                   "CEILING_STREAM": f"{namespace}:ceiling"}
    with served("api:create_app()", env) as service, Client(service.base, key) as client:
        client.create_topic("bench-single")
        client.publish("bench-single", PAYLOAD)  # warm: caches, connections
        runs = [measured(Run("single publish"), service, args.threads, args.seconds,
                         single(client, "bench-single"))]
        runs[0].stored = stored(client, "bench-single") - 1
        with served("bench.ceiling:create_app()", ceiling_env) as ceiling, \
                httpx.Client(base_url=ceiling.base, timeout=30) as http:
            runs.append(measured(Run("bare request (ceiling)"), ceiling, args.threads,
                                 args.seconds, bare(http)))
        for in_flight in args.in_flight:
            runs.append(batch_run(client, service, in_flight, args))
        runs.append(raw_run(client, service, key, args))
    return runs


def raw_run(client: Client, service: Served, key: str, args: argparse.Namespace) -> Run:
    """2 threads posting batches of 1,000 with bare httpx (the service's batch ceiling)."""
    client.create_topic("bench-raw")
    with httpx.Client(base_url=service.base, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        run = measured(Run("bare batches of 1,000"), service, 2, args.seconds,
                       raw_batches(http, "bench-raw", 1000))
    run.requests = run.messages // 1000
    run.stored = stored(client, "bench-raw")
    return run


def batch_run(client: Client, service: Served, in_flight: int, args: argparse.Namespace
              ) -> Run:
    topic = f"bench-batch-{in_flight}"
    client.create_topic(topic)
    sent: list[httpx.Request] = []
    with client.batch_publisher(topic, max_in_flight=in_flight) as publisher:
        publisher.publish(PAYLOAD).result()
        client.http.event_hooks["request"].append(sent.append)
        try:
            run = measured(Run(f"batch, {in_flight} in flight"), service, args.threads,
                           args.seconds, batched(publisher, args.window))
        finally:
            client.http.event_hooks["request"].remove(sent.append)
    run.stored = stored(client, topic) - 1
    run.requests = len(sent)
    return run


def stored(client: Client, topic: str) -> int:
    return int(client.get_topic(topic)["stats"]["published_total"])


def report(runs: list[Run], args: argparse.Namespace, load: tuple[float, float, float],
           flush: dict[str, float]) -> None:
    print(f"client benchmark: {args.threads} threads, {args.seconds:g}s per run; batches: at "
          f"most {args.window} unacknowledged messages per thread")
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; PostgreSQL "
          f"INSERT + COMMIT, one connection: {flush['per_s']:.0f} commits/s")
    if load[0] > QUIET_LOAD:
        print(f"WARNING: 1-minute load average {load[0]:.2f} > {QUIET_LOAD}: the machine is "
              f"not quiet, figures will be noisy")
    print(f"{'':24}{'messages/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'API µs/msg':>12}"
          f"{'client µs/msg':>15}{'CPU busy':>10}{'msgs/request':>14}   stored/sent")
    for run in runs:
        stored = "" if run.stored is None else f"{run.stored}/{run.messages}"
        print(f"{run.label:24}{run.rate:>11.0f}{run.percentile(0.5):>9.2f}"
              f"{run.percentile(0.99):>9.2f}{run.cpu_us(run.api_cpu_s):>12.0f}"
              f"{run.cpu_us(run.client_cpu_s):>15.0f}{run.busy:>10.0%}"
              f"{run.messages / (run.requests or run.messages or 1):>14.0f}   {stored}")
    one, ceiling, raw = runs[0], runs[1], runs[-1]
    for batch in runs[2:-1]:
        ratio = batch.rate / one.rate if one.rate else float("nan")
        verdict = "met" if ratio >= GOAL else "not met"
        print(f"{batch.label}: {ratio:.1f}x single publishes (goal {GOAL:g}x: {verdict}), "
              f"{batch.rate / ceiling.rate:.1f}x the bare-request ceiling, "
              f"{batch.rate / raw.rate:.2f} of bare batches")
    print(f"single publishes: {one.rate / ceiling.rate:.2f} of the bare-request ceiling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per run")
    parser.add_argument("--threads", type=int, default=16, help="producer threads")
    parser.add_argument("--window", type=int, default=128,
                        help="batch: unacknowledged messages per thread")
    parser.add_argument("--in-flight", type=lambda text: [int(n) for n in text.split(",")],
                        default=[1, 2, 4], help="batch runs: batch requests in flight (1,2,4)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()
    namespace = f"mqbench{uuid.uuid4().hex[:8]}"
    try:
        with temporary_database(ADMIN_URL, "mqbench") as db_url:
            flush = commit_rate(db_url, FLUSH_SECONDS)
            runs = measure(db_url, namespace, args)
    finally:
        cleanup_redis(namespace)
    report(runs, args, load, flush)


if __name__ == "__main__":
    main()
