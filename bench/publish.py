"""Publish throughput and latency, next to the machine's ceiling measured in the same run.

    python bench/publish.py [--seconds 10] [--connections 16]

Starts the API with the Procfile's `web` command (gunicorn) on a fresh PostgreSQL database
and a private Redis namespace, drives it with `wrk` (Debian package `wrk`), and then does the
same for `bench/ceiling.py` — a bare Flask endpoint doing one INSERT and one XADD — under the
same gunicorn command line. Prints requests/s and latency percentiles for single publishes,
and messages/s for batches of 1,000. Environment: `BENCH_DATABASE_URL` (an admin URL of a
PostgreSQL server, default local), `BENCH_REDIS_URL` (default local). Prints; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import Database, upgrade  # noqa: E402
from models.database import temporary_database  # noqa: E402
from models.tenancy import create_tenant  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [[{body}]]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_command(app_target: str) -> str:
    """The Procfile's `web` line, optionally serving another app."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = line.split(":", 1)[1].strip()
            return command.replace("'api:create_app()'", shlex.quote(app_target))
    raise SystemExit("Procfile has no web process")


@contextmanager
def served(app_target: str, env: dict[str, str]) -> Iterator[str]:
    """Run the Procfile web command for `app_target`; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        web_command(app_target), shell=True, cwd=ROOT, start_new_session=True,
        env={**os.environ, **env, "PORT": str(port), "PYTHONPATH": str(ROOT),
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_until_up(base: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server at {base} did not start")


def wrk(url: str, key: str, body: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk against `url` with a POST body; returns requests/s, p50/p99 ms, errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(key=key, body=body))
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout
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
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"),
            "errors": float(errors.group(1)) if errors else 0.0}


def single_body() -> str:
    return json.dumps({"topic": "bench", "payload": {"order": 1234, "amount": 99.5,
                                                     "customer": "c-42"}})


def batch_body(size: int) -> str:
    messages = [{"payload": {"order": i, "amount": 99.5}, "key": f"k{i % 16}"}
                for i in range(size)]
    return json.dumps({"topic": "bench", "messages": messages})


def measure_service(db_url: str, namespace: str, seconds: int, connections: int) -> dict:
    upgrade(db_url)
    database = Database(db_url)
    with database.session() as session:
        _, key = create_tenant(session, "bench")
    database.dispose()
    env = {"DATABASE_URL": db_url, "REDIS_URL": REDIS_URL, "REDIS_NAMESPACE": namespace,
           "LOG_LEVEL": "WARNING"}
    with served("api:create_app()", env) as base:
        api = base + "/api/v1/mq"
        created = httpx.post(api + "/queues", json={"name": "bench"},
                             headers={"Authorization": f"Bearer {key}"})
        created.raise_for_status()
        single = wrk(api + "/publish", key, single_body(), seconds, connections)
        batch = wrk(api + "/publish/batch", key, batch_body(1000), seconds, 4)
    return {"single": single, "batch": batch}


def measure_ceiling(db_url: str, namespace: str, seconds: int, connections: int) -> dict:
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS bench_ceiling ("
                                "id bigserial PRIMARY KEY, message_id varchar(64) NOT NULL, "
                                "payload jsonb, published_at timestamptz DEFAULT now())"))
    engine.dispose()
    raw_url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {"DATABASE_URL": raw_url, "REDIS_URL": REDIS_URL,
           "CEILING_STREAM": f"{namespace}:ceiling"}
    with served("bench.ceiling:create_app()", env) as base:
        return {"single": wrk(base + "/publish", "-", single_body(), seconds, connections)}


def cleanup_redis(namespace: str) -> None:
    client = Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    namespace = f"mqbench{uuid.uuid4().hex[:8]}"
    try:
        with temporary_database(ADMIN_URL, "mqbench") as db_url:
            service = measure_service(db_url, namespace, args.seconds, args.connections)
            ceiling = measure_ceiling(db_url, namespace, args.seconds, args.connections)
    finally:
        cleanup_redis(namespace)
    report(service, ceiling, args)


def report(service: dict, ceiling: dict, args: argparse.Namespace) -> None:
    ours, bare = service["single"], ceiling["single"]
    print(f"publish benchmark: {args.seconds}s per run, {args.connections} connections, "
          f"web command: {web_command('api:create_app()')}")
    print(f"{'':34}{'service':>12}{'ceiling':>12}{'ratio':>8}")
    print(f"{'single publish, requests/s':34}{ours['rps']:>12.0f}{bare['rps']:>12.0f}"
          f"{ours['rps'] / bare['rps']:>8.2f}")
    print(f"{'single publish, p50 ms':34}{ours['p50']:>12.2f}{bare['p50']:>12.2f}")
    print(f"{'single publish, p99 ms':34}{ours['p99']:>12.2f}{bare['p99']:>12.2f}")
    print(f"{'single publish, non-2xx':34}{ours['errors']:>12.0f}{bare['errors']:>12.0f}")
    batch = service["batch"]
    print(f"{'batch of 1,000, messages/s':34}{batch['rps'] * 1000:>12.0f}")
    print(f"{'batch of 1,000, p50 / p99 ms':34}{batch['p50']:>6.1f} / {batch['p99']:.1f}"
          f"   non-2xx: {batch['errors']:.0f}")


if __name__ == "__main__":
    main()
