"""What tracing costs a publish: the API's server time per single publish, tracing off and on.

    python bench/tracing.py [--messages 2000] [--rounds 5]

Through the real app in-process (`api.create_app`, Flask's test client, so the time is all
server time: the publish fast path, PostgreSQL and Redis included), on a fresh database and
Redis namespace, rounds of `--messages` single publishes of each kind, interleaved:

- `off`: tracing off, no `traceparent` (what every publish paid before trace context existed);
- `off+traceparent`: tracing off, the request carries a `traceparent` (stored, forwarded);
- `on`: the OpenTelemetry SDK on, a producer span per publish through a `BatchSpanProcessor`
  whose exporter drops the spans (the instrumentation's cost without a collector's);
- a bare Redis `PING` and `SELECT 1`: one round trip to each store, measured alongside.

Prints the median over rounds of the wall and CPU time per publish. Run it on the commit
before trace context existed too (it leaves `on` out there) to compare `off` with it.
Environment: `BENCH_DATABASE_URL`, `BENCH_REDIS_URL`. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from bench.inprocess import OPERATOR, fresh_settings  # noqa: E402
from models import Database  # noqa: E402
from mq.settings import Settings  # noqa: E402

API = "/api/v1/mq"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    with fresh_settings() as settings:
        run(settings, args)

def run(settings: Settings, args: argparse.Namespace) -> None:
    kinds: dict[str, Callable[[], None]] = {}
    off = _publisher(create_app(settings), "off")
    kinds["off"] = lambda: off({})
    kinds["off+traceparent"] = lambda: off({"traceparent": TRACEPARENT})
    traced_app = _traced_app(settings)
    if traced_app is not None:
        on = _publisher(traced_app, "on")
        kinds["on"] = lambda: on({"traceparent": TRACEPARENT})
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind, publish in kinds.items():
            started, used = time.perf_counter(), time.process_time()
            for _ in range(args.messages):
                publish()
            wall[kind].append((time.perf_counter() - started) / args.messages * 1e6)
            cpu[kind].append((time.process_time() - used) / args.messages * 1e6)
    ping, select = _round_trips(settings)
    print(f"{args.rounds} rounds x {args.messages} single publishes each, medians per publish:")
    print(f"{'kind':<18} {'wall µs':>9} {'CPU µs':>9} {'CPU vs off':>11}")
    base = statistics.median(cpu["off"])
    for kind in kinds:
        mid = statistics.median(cpu[kind])
        print(f"{kind:<18} {statistics.median(wall[kind]):>9.0f} {mid:>9.0f} "
              f"{mid - base:>+10.0f}µs")
    print(f"ceilings: Redis PING {ping:.0f} µs, SELECT 1 {select:.0f} µs (medians)")


def _publisher(app: Any, tag: str) -> Callable[[dict[str, str]], None]:
    client = app.test_client()
    tenant = client.post(f"{API}/tenants", json={"name": f"bench-{tag}-{uuid.uuid4().hex[:6]}"},
                         headers={"Authorization": f"Bearer {OPERATOR}"}).json
    auth = {"Authorization": f"Bearer {tenant['admin_key']}"}
    client.post(f"{API}/queues", json={"name": "bench"}, headers=auth)

    def publish(headers: dict[str, str]) -> None:
        response = client.post(f"{API}/publish", json={"topic": "bench", "payload": {"n": 1}},
                               headers={**auth, **headers})
        assert response.status_code == 201, response.json

    return publish


def _traced_app(settings: Settings) -> Any:
    """The app with the SDK on and spans dropped after batching (None: this commit has no
    tracing to turn on)."""
    if "tracing" not in inspect.signature(create_app).parameters:
        return None
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from mq.tracing import Tracing

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return create_app(settings, tracing=Tracing(provider.get_tracer("mq"), provider))


def _round_trips(settings: Settings, count: int = 500) -> tuple[float, float]:
    redis = Redis.from_url(settings.redis_url)
    database = Database(settings.database_url)
    pings, selects = [], []
    with database.session() as session:
        for _ in range(count):
            started = time.perf_counter()
            redis.ping()
            pings.append((time.perf_counter() - started) * 1e6)
            started = time.perf_counter()
            session.execute(text("SELECT 1"))
            selects.append((time.perf_counter() - started) * 1e6)
    database.dispose()
    return statistics.median(pings), statistics.median(selects)


if __name__ == "__main__":
    main()
