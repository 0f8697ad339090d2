"""`GET /status` follows the heartbeats of real processes; `GET /health` follows a real Redis
server that is stopped and started again (a private one, so nothing else loses its Redis)."""

from __future__ import annotations

import dataclasses
import re
import time

import httpx

from api import create_app
from tests.conftest import API
from tests.processes import wait_until


def _status(client) -> dict:
    response = client.get(API + "/status")
    assert response.status_code == 200
    return response.json


def test_status_lists_live_processes_and_drops_a_killed_worker(client, processes):
    first = processes.worker(threads=2)
    second = processes.worker(threads=2)
    scheduler = processes.scheduler()
    status = _status(client)
    workers = {w["pid"]: w for w in status["processes"]["workers"]}
    assert set(workers) == {first.pid, second.pid}
    assert set(workers[first.pid]) == {"id", "host", "pid", "last_heartbeat", "subscriptions"}
    assert isinstance(workers[first.pid]["subscriptions"], int)
    assert status["processes"]["scheduler"]["pid"] == scheduler.pid
    # Two workers on one host started with the same PROMETHEUS_PORT serve on different ports.
    ports = [_metrics_port(processes, index) for index in (0, 1)]
    assert ports[0] != ports[1]
    assert all(httpx.get(f"http://127.0.0.1:{p}/metrics").status_code == 200 for p in ports)

    processes.kill(first)
    started = time.monotonic()
    wait_until(lambda: [w["pid"] for w in _status(client)["processes"]["workers"]]
               == [second.pid], timeout=25, every=0.5)
    assert time.monotonic() - started <= 3 * 5 + 5  # the heartbeat's time to live, plus slack

    processes.stop(scheduler)
    wait_until(lambda: _status(client)["processes"]["scheduler"] is None, timeout=5)


def _metrics_port(processes, index: int) -> int:
    def announced() -> int | None:
        text = (processes.tmp / f"worker-{index}.log").read_text()
        found = re.search(r"prometheus metrics on port (\d+)", text)
        return int(found[1]) if found else None

    return wait_until(announced, timeout=10)


def test_health_is_503_while_redis_is_stopped_and_recovers(settings, redis_server):
    app = create_app(dataclasses.replace(settings, redis_url=redis_server.url))
    client = app.test_client()
    try:
        assert client.get(API + "/health").status_code == 200

        redis_server.stop()
        response = client.get(API + "/health")
        assert response.status_code == 503
        body = response.json
        assert body["status"] == "unhealthy"
        assert body["checks"]["redis"]["status"] == "unhealthy"
        assert body["checks"]["database"]["status"] == "healthy"
        assert _status(client)["processes"] == {"workers": [], "scheduler": None}

        redis_server.start()
        response = wait_until(lambda: (r := client.get(API + "/health")).status_code == 200
                              and r, timeout=10, every=0.2)
        assert response.json["status"] == "healthy"
        assert response.json["checks"]["redis"]["details"]["ping"] == "PONG"
    finally:
        app.extensions["mq"].database.dispose()
