"""Server time of the dashboard's overview for a tenant with many queues.

    python bench/dashboard.py [--queues 100] [--subscriptions 2] [--messages 20] [--rounds 50]

On a fresh PostgreSQL database (migrated) and a fresh Redis namespace, one tenant gets
`--queues` queues (1 to 4 partitions), `--subscriptions` paused webhook subscriptions on each
and `--messages` published messages per queue (so every figure the page shows is non-zero:
lengths, lag, oldest pending, per-minute rings). Then, through the real app in-process
(`api.create_app`, Flask's test client: the time measured is all server time), `--rounds`
requests of each, interleaved:

- `GET /dashboard/` signed in as the tenant's admin (the overview page, HTML);
- `GET /api/v1/mq/metrics` with the same key: the REST overview, which reads the same streams
  and groups without the per-queue rows, sparklines and template — the floor beside it;
- a bare Redis `PING` and a `SELECT 1` round trip: what one trip to each store costs here.

Environment: `BENCH_DATABASE_URL` (an admin URL of a PostgreSQL server, default local),
`BENCH_REDIS_URL` (default local). Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from bench.inprocess import OPERATOR, fresh_settings  # noqa: E402
from models import Database  # noqa: E402
from mq.settings import Settings  # noqa: E402

API = "/api/v1/mq"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--subscriptions", type=int, default=2)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    with fresh_settings(mq_secret_key=uuid.uuid4().hex) as settings:
        run(settings, args)

def run(settings: Settings, args: argparse.Namespace) -> None:
    app = create_app(settings)
    client = app.test_client()
    key = _tenant_with_queues(client, args)
    page = app.test_client()
    page.get("/dashboard/sign-in")
    token = CSRF.search(page.get("/dashboard/sign-in").get_data(as_text=True))
    assert token, "no CSRF token on the sign-in page"
    signed = page.post("/dashboard/sign-in", data={"token": key, "csrf_token": token.group(1)})
    assert signed.status_code == 303, signed.status_code
    redis = Redis.from_url(settings.redis_url)
    database = Database(settings.database_url, pool_size=1)

    def dashboard() -> None:
        response = page.get("/dashboard/")
        assert response.status_code == 200 and response.data.count(b"data-queue=") == args.queues

    def rest() -> None:
        assert client.get(f"{API}/metrics", headers=_bearer(key)).status_code == 200

    def select_one() -> None:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    timings: dict[str, list[float]] = {"GET /dashboard/ (overview)": [],
                                       "GET /metrics (REST overview)": [],
                                       "Redis PING": [], "SELECT 1": []}
    probes: list[Callable[[], object]] = [dashboard, rest, redis.ping, select_one]
    for probe in probes:  # warm caches and pools once
        probe()
    for _ in range(args.rounds):
        for name, probe in zip(timings, probes, strict=True):
            started = time.perf_counter()
            probe()
            timings[name].append((time.perf_counter() - started) * 1000)
    size = len(page.get("/dashboard/").data)
    print(f"tenant: {args.queues} queues, {args.subscriptions} subscriptions each, "
          f"{args.messages} messages each; overview page {size / 1024:.0f} KiB")
    print(f"{'request':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}   ({args.rounds} rounds)")
    for name, values in timings.items():
        ordered = sorted(values)
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        print(f"{name:32} {statistics.median(values):8.2f} {p95:8.2f} {ordered[-1]:8.2f}")
    database.dispose()


def _tenant_with_queues(client: FlaskClient, args: argparse.Namespace) -> str:
    created = client.post(f"{API}/tenants", json={"name": f"bench-{uuid.uuid4().hex[:8]}"},
                          headers=_bearer(OPERATOR))
    assert created.status_code == 201, created.json
    key = created.json["admin_key"]
    for n in range(args.queues):
        name = f"queue-{n:03d}"
        made = client.post(f"{API}/queues", json={"name": name, "partition_count": 1 + n % 4},
                           headers=_bearer(key))
        assert made.status_code == 201, made.json
        for s in range(args.subscriptions):
            body = {"topic": name, "consumer_group": f"group-{s}", "status": "paused",
                    "handler_config": {"type": "http", "url": "https://hooks.example.com/x"}}
            assert client.post(f"{API}/subscriptions", json=body,
                               headers=_bearer(key)).status_code == 201
        batch = [{"payload": {"n": i}, "key": f"k{i}"} for i in range(args.messages)]
        sent = client.post(f"{API}/publish/batch", json={"topic": name, "messages": batch},
                           headers=_bearer(key))
        assert sent.status_code == 201, sent.json
    return str(key)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


if __name__ == "__main__":
    main()
