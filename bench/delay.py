"""Lateness of delayed messages (handler invoked - due time), next to dramatiq's and Celery's.

    python bench/delay.py [--messages 1000] [--spread 10] [--threads 8]

`--messages` delayed messages with due times spread uniformly at random over `--spread`
seconds, all sent first (the earliest is due after every send returned), then delivered by
one worker process with a no-op handler:

- this service: the publishing core's delayed flow (`publishing.messages.scheduled`: a `scheduled`
  record, then the message parked in the Redis delay set), released by a real scheduler
  process (`scheduler.main.run`) and delivered by a real worker process; every waiting
  message is in Redis;
- dramatiq's stock `RedisBroker` (`send_with_options(delay=...)`: a delay queue the worker
  polls);
- Celery with its Redis broker (`apply_async(eta=...)`: the worker holds ETA tasks in its
  memory until they are due).

The three systems, their workers and the database come from `bench/deliver.py`.
Environment: `BENCH_DATABASE_URL`, `BENCH_REDIS_URL` as there. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deliver import (
    FORK,
    CelerySystem,
    DramatiqSystem,
    MQSystem,
    bench_database,
    load_invocations,
    worker_process,
)

LEAD_S = 8.0  # the earliest due time after the start of sending (sending takes ~4 s)


def mq_sender(system: MQSystem) -> Callable[[float], str]:
    """Publish one message due at the given Unix time through the publishing core's delayed
    flow (a `scheduled` record, then parked in the delay set)."""
    from publishing.jobs import Job
    from publishing.messages import PublishTarget, prepare_message, scheduled

    target = PublishTarget.of(system.topic)

    def send(due: float) -> str:
        """Returns the id the handler notes (carried in the payload, as in `bench/deliver.py`)."""
        noted = uuid.uuid4().hex
        item = prepare_message(target, system.principal.key_name,
                               {"payload": {"id": noted}, "message_id": noted})
        system.publisher.publish_now(
            Job(target.name, [scheduled(item, datetime.fromtimestamp(due, UTC), None)]))
        return noted

    return send


def dramatiq_sender(system: DramatiqSystem) -> Callable[[float], str]:
    def send(due: float) -> str:
        message_id = f"{random.getrandbits(64):x}"
        delay_ms = max(0, int((due - time.time()) * 1000))
        system.actor.send_with_options(args=(message_id,), delay=delay_ms)
        return message_id

    return send


def celery_sender(system: CelerySystem) -> Callable[[float], str]:
    def send(due: float) -> str:
        message_id = f"{random.getrandbits(64):x}"
        system.task.apply_async((message_id,), eta=datetime.fromtimestamp(due, UTC))
        return message_id

    return send


def measure(system: Any, send: Callable[[float], str], messages: int, spread: float,
            released: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    start = time.time()
    dues = sorted(start + LEAD_S + random.random() * spread for _ in range(messages))
    with worker_process(system, messages, timeout=LEAD_S + spread + 60) as invocations:
        due_of = {send(due): due for due in random.sample(dues, len(dues))}
        sent_s = time.time() - start
    seen = load_invocations(invocations.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(invocations.path)
    result = _figures(seen, due_of)
    result.update(sent_s=sent_s, sent=messages)
    if released is not None:
        # Stream entry ids have millisecond resolution: compare with the due millisecond.
        due_ms = {m: int(due * 1000) / 1000 for m, due in due_of.items()}
        result["released"] = _figures(released(), due_ms)
    return result


def _figures(at: dict[str, float], due_of: dict[str, float]) -> dict[str, Any]:
    lateness = sorted((at[m] - due) * 1000 for m, due in due_of.items() if m in at)
    return {"delivered": len(lateness), "early": sum(1 for value in lateness if value < 0),
            "p50": _quantile(lateness, 0.50), "p99": _quantile(lateness, 0.99),
            "max": lateness[-1] if lateness else float("nan")}


def mq_release_times(system: MQSystem) -> dict[str, float]:
    """When each message entered its stream: the stream entry id is the release time (ms)."""
    from broker.envelope import Envelope

    entries = system.redis.xrange(system.keys.stream(system.topic.id, 0))
    return {Envelope.decode(fields).message_id: int(entry_id.split("-")[0]) / 1000
            for entry_id, fields in entries}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def row(name: str, result: dict[str, Any]) -> str:
    line = (f"  {name:<58} {result['delivered']:5d}/{result['sent']:<5d} early "
            f"{result['early']:3d}  p50 {result['p50']:8.2f}  p99 {result['p99']:8.2f}  "
            f"max {result['max']:8.2f} ms   (sending took {result['sent_s']:.1f} s)")
    if "released" in result:
        part = result["released"]
        line += (f"\n  {'  of which: due -> entry in the stream (release)':<58} "
                 f"{part['delivered']:5d}/{result['sent']:<5d} early {part['early']:3d}  "
                 f"p50 {part['p50']:8.2f}  p99 {part['p99']:8.2f}  max {part['max']:8.2f} ms")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--only", choices=("mq", "dramatiq", "celery"), action="append")
    args = parser.parse_args()
    only = args.only or ["mq", "dramatiq", "celery"]
    print(f"delay bench: {args.messages} delayed messages due over {args.spread:g} s; "
          f"{args.threads} worker threads; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("lateness = handler invoked - due time")
    results: dict[str, tuple[str, dict[str, Any]]] = {}
    with bench_database() as database_url:
        if "mq" in only:
            results["mq"] = _run_mq(database_url, args)
        if "dramatiq" in only:
            system = DramatiqSystem(args.threads)
            try:
                results["dramatiq"] = (system.name + " (delay=)", measure(
                    system, dramatiq_sender(system), args.messages, args.spread))
            finally:
                system.close()
        if "celery" in only:
            celery = CelerySystem(args.threads)
            try:
                results["celery"] = (celery.name + " (eta=, held in worker memory)", measure(
                    celery, celery_sender(celery), args.messages, args.spread))
            finally:
                celery.close()
    for name, result in results.values():
        print(row(name, result))


def _run_mq(database_url: str, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from scheduler.main import run as run_scheduler

    system = MQSystem(database_url, args.threads)
    scheduler = FORK.Process(target=run_scheduler, args=(system.settings,))
    scheduler.start()
    try:
        result = measure(system, mq_sender(system), args.messages, args.spread,
                         lambda: mq_release_times(system))
    finally:
        scheduler.terminate()
        scheduler.join(30)
        system.close()
    return system.name + " (delay set, scheduler process)", result


if __name__ == "__main__":
    main()
