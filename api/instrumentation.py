"""The API process's own metrics: HTTP requests counted and timed, and the Prometheus
exposition at `/metrics` (operator token)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from api.auth import operator_access
from api.context import services
from mq import metrics


def install(app: Flask) -> None:
    """HTTP request metrics and the Prometheus exposition at `/metrics` (operator token)."""
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    app.add_url_rule("/metrics", "prometheus", _prometheus)


@operator_access
def _prometheus() -> Response:
    """This process's metrics, or, under gunicorn started by `mq api`, every API worker's
    (prometheus-client's multiprocess mode, set up by the `mq api` command)."""
    directory = services().settings.prometheus_multiproc_dir
    registry = REGISTRY
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe_request(response: Response) -> Response:
    current = request._get_current_object()  # type: ignore[attr-defined]
    rule = current.url_rule
    observe_request(current.method, rule.rule if rule is not None else "unmatched",
                    response.status_code, g.get("metrics_started"))
    return response


def observe_request(method: str, route: str, status: int, started: float | None) -> None:
    """Count a request answered with `status` and, if `started` (perf_counter) is known,
    its duration."""
    metrics.child(metrics.HTTP_REQUESTS, method, route, str(status)).inc()
    if started is not None:
        metrics.child(metrics.HTTP_DURATION, method, route).observe(
            time.perf_counter() - started)
