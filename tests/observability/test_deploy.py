"""The Grafana dashboard and the Prometheus scrape configuration match what the processes
actually expose."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY

from mq import metrics
from mq.settings import Settings
from scheduler.metrics import GaugeExporter
from tests.processes import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "mq-dashboard.json"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


def exposed_names() -> set[str]:
    """Sample names the API and workers (`mq.metrics`) and the scheduler's gauges expose."""
    families = [f for f in REGISTRY.collect() if f.name.startswith("mq_")]
    families += list(GaugeExporter.collect(_EmptyExporter()))  # type: ignore[arg-type]
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


class _EmptyExporter:
    """Just enough of a `GaugeExporter` for its `collect` (an empty snapshot)."""

    def __init__(self) -> None:
        from threading import Lock

        from scheduler.metrics import Snapshot
        self.lock = Lock()
        self.snapshot = Snapshot()


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_uses_only_exposed_metrics_and_covers_the_key_ones():
    assert metrics.MESSAGES  # the shared metrics are registered
    used = {name for expr in dashboard_exprs() for name in re.findall(r"\bmq_[a-z_]+", expr)}
    assert used <= exposed_names(), used - exposed_names()
    assert {"mq_messages_total", "mq_message_latency_seconds_bucket", "mq_queue_size",
            "mq_subscription_lag", "mq_subscription_pending", "mq_dead_letter_size",
            "mq_subscription_oldest_pending_age_seconds", "mq_http_requests_total",
            "mq_publish_duration_seconds_bucket"} <= used


def test_the_latency_histogram_has_the_contract_buckets():
    assert metrics.LATENCY_BUCKETS[0] == 0.001
    assert metrics.LATENCY_BUCKETS[-1] == 10.0


def test_prometheus_scrapes_api_workers_and_scheduler():
    config: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = Settings().prometheus_port
    api = jobs["mq-api"]
    assert api["static_configs"][0]["targets"] == [f"api:{Settings().port}"]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"]["type"] == "Bearer"
    assert jobs["mq-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": port, "refresh_interval": "30s"}
    assert jobs["mq-scheduler"]["static_configs"][0]["targets"] == [f"scheduler:{port}"]


def test_compose_runs_prometheus_with_the_scrape_config():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "/tmp/operator-token" in " ".join(prometheus["entrypoint"])
    token_file = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())[
        "scrape_configs"][0]["authorization"]["credentials_file"]
    assert token_file == "/tmp/operator-token"
