"""Prometheus metrics shared by the processes, and the exposition server of workers and the
scheduler.

Every process has its own registry (`REGISTRY`, prometheus-client's default). The API serves
it at `/metrics`; workers and the scheduler serve it over HTTP on `PROMETHEUS_PORT`. Several
processes on one host do not collide: each binds the first free port from `PROMETHEUS_PORT`
upward (`mq worker --processes 4` on 9465 serves on 9465-9468, a scheduler started next takes
9469) and logs the line `prometheus metrics on port N`.

Labels stay bounded: topic names, tenant ids, handler types, subscription ids, statuses,
HTTP routes (the URL rule, never the path) -- never message ids.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Seconds, 1 ms ... 10 s (docs/api.md).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How many ports above `PROMETHEUS_PORT` a process tries before giving up on serving.
PORT_TRIES = 64

MESSAGES = Counter(
    "mq_messages", "Messages published and delivery outcomes",
    ["topic", "type", "status", "tenant_id"])
MESSAGE_LATENCY = Histogram(
    "mq_message_latency_seconds", "Publish accepted to handler finished, successful deliveries",
    ["topic", "handler_type"], buckets=LATENCY_BUCKETS)
HANDLER_DURATION = Histogram(
    "mq_handler_duration_seconds", "Time spent in the handler per delivery attempt",
    ["topic", "handler_type"], buckets=LATENCY_BUCKETS)
RETRIED_ATTEMPTS = Counter(
    "mq_delivery_retries", "Delivery attempts after the first (every attempt is counted in "
    "mq_messages_total as consumed or failed)", ["topic", "handler_type"])
PUBLISH_LATENCY = Histogram(
    "mq_publish_duration_seconds", "Time to accept a publish request (record + stream append)",
    ["topic", "tenant_id"], buckets=LATENCY_BUCKETS)
HTTP_REQUESTS = Counter(
    "mq_http_requests", "HTTP requests answered by the API", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "mq_http_request_duration_seconds", "HTTP request duration", ["method", "route"],
    buckets=LATENCY_BUCKETS)


@functools.lru_cache(maxsize=8192)
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: prometheus-client validates and locks on every
    `labels()` call, a measurable part of a publish."""
    return metric.labels(*labels)


def serve(port: int, *, tries: int = PORT_TRIES) -> int | None:
    """Serve `REGISTRY` on the first free port from `port` upward; returns it (None if none)."""
    for candidate in range(port, port + tries):
        try:
            start_http_server(candidate, registry=REGISTRY)
        except OSError:
            continue
        log.info("prometheus metrics on port %d", candidate)
        return candidate
    log.warning("no free port for prometheus metrics in %d-%d", port, port + tries - 1)
    return None


def register_collector(collector: Any) -> None:
    REGISTRY.register(collector)
