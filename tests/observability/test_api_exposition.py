"""The API process as deployed (`mq api`: gunicorn with several workers): its `/metrics` adds
up the counters of every gunicorn worker."""

from __future__ import annotations

import signal
import uuid

import httpx

from tests.conftest import OPERATOR_TOKEN
from tests.observability.conftest import parse_exposition, value
from tests.processes import Running, child_env, free_port, wait_until_up


def test_mq_api_exposition_sums_every_gunicorn_worker(settings, tmp_path):
    port = free_port()
    environ = {**settings.as_environ(), "PORT": str(port), "WEB_CONCURRENCY": "2",
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    api = Running("api", env=child_env(**environ))
    base = f"http://127.0.0.1:{port}"
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    try:
        wait_until_up(base + "/api/v1/mq/health")
        with httpx.Client(base_url=base + "/api/v1/mq", timeout=10) as client:
            created = client.post("/tenants", json={"name": f"t-{uuid.uuid4().hex[:10]}"},
                                  headers=operator).json()
            admin = {"Authorization": f"Bearer {created['admin_key']}"}
            assert client.post("/queues", json={"name": "orders"}, headers=admin
                               ).status_code == 201
            for i in range(20):  # separate connections: both workers take some
                response = httpx.post(base + "/api/v1/mq/publish", headers=admin, timeout=10,
                                      json={"topic": "orders", "payload": {"n": i}})
                assert response.status_code == 201
        scraped = httpx.get(base + "/metrics", headers=operator, timeout=10)
        assert scraped.status_code == 200
        samples = parse_exposition(scraped.text)
        assert value(samples, "mq_messages_total", topic="orders", type="publish",
                     status="published", tenant_id=created["id"]) == 20
        assert value(samples, "mq_http_requests_total", method="POST",
                     route="/api/v1/mq/publish", status="201") == 20
        assert value(samples, "mq_publish_duration_seconds_count", topic="orders") == 20
        assert httpx.get(base + "/metrics", timeout=10).status_code == 401
        # Both gunicorn workers counted some of them (one counter file per worker process).
        assert len(list((tmp_path / "prometheus").glob("counter_*.db"))) == 2
    finally:
        api.process.send_signal(signal.SIGTERM)
        try:
            api.process.wait(timeout=20)
        except Exception:
            api.kill()
