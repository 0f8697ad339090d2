"""Metrics: the tenant's JSON view (`/metrics`, `/metrics/topics`, `/metrics/consumers` under
the base path) and the API process's Prometheus exposition (`/metrics` at the root, operator
token).

Figures come from Redis: stream lengths and group lag/pending from `XINFO`, recent rates from
the per-second rings of `broker/rates.py` (publishes counted here, deliveries by the workers),
latencies from the workers' samples (publish accepted -> handler finished). Rates are per
second over the last 60 s; latencies in ms over the most recent deliveries (`null` without
any). `throughput` in the overview is finished delivery attempts per second (successes and
failures); `processing_rate` counts successes, `error_rate` failures. A subscription's
`active_consumers` counts its consumers that belong to live worker processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, g, request
from flask.views import MethodView
from marshmallow import Schema, fields
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from api.auth import operator_access, principal, tenant_access
from api.fields import Timestamp
from api.parsing import Blueprint
from api.services import services
from broker.heartbeats import live_processes
from broker.inspection import GroupTarget, GroupView, inspect_groups, live_consumers
from broker.keys import group_name
from broker.rates import Rates, Window, average, percentile
from models import Subscription, Tenant, Topic
from mq import metrics

PREFIX = "/metrics"
SECURITY = [{"bearer": []}]
blp = Blueprint("metrics", __name__, description="Metrics of the tenant's topics and "
                "subscriptions")
log = logging.getLogger(__name__)


class RedisStreamsOut(Schema):
    total_streams = fields.Integer()
    total_consumer_groups = fields.Integer()
    total_messages = fields.Integer()
    pending_messages = fields.Integer()


class ConsumersOut(Schema):
    active_consumers = fields.Integer()
    total_lag = fields.Integer()
    processing_rate = fields.Float()
    error_rate = fields.Float()


class PerformanceOut(Schema):
    average_latency_ms = fields.Float(allow_none=True)
    p95_latency_ms = fields.Float(allow_none=True)
    p99_latency_ms = fields.Float(allow_none=True)
    throughput = fields.Float()


class OverviewOut(Schema):
    redis_streams = fields.Nested(RedisStreamsOut)
    consumers = fields.Nested(ConsumersOut)
    performance = fields.Nested(PerformanceOut)
    kafka_topics = fields.Raw(allow_none=True)


class TopicMetricsOut(Schema):
    name = fields.String()
    length = fields.Integer()
    published_total = fields.Integer()
    publish_rate = fields.Float()
    bytes_rate = fields.Float()
    subscriptions = fields.Integer()
    lag = fields.Integer()


class TopicMetricsPage(Schema):
    items = fields.List(fields.Nested(TopicMetricsOut))


class ConsumerMetricsOut(Schema):
    id = fields.String()
    topic = fields.String()
    consumer_group = fields.String()
    lag = fields.Integer()
    pending = fields.Integer()
    processing_rate = fields.Float()
    error_rate = fields.Float()
    last_consumed_at = Timestamp(allow_none=True)
    active_consumers = fields.Integer()


class ConsumerMetricsPage(Schema):
    items = fields.List(fields.Nested(ConsumerMetricsOut))


@blp.route("")
class Overview(MethodView):
    @tenant_access()
    @blp.response(200, OverviewOut)
    @blp.doc(security=SECURITY)
    def get(self) -> dict[str, Any]:
        """The tenant's streams, consumers and delivery performance at a glance."""
        topics = _topic_items(_own_topics())
        consumers = _consumer_items(_own_subscriptions())
        samples = [s for c in consumers for s in c["_latencies"]]
        processing = round(sum(c["processing_rate"] for c in consumers), 3)
        errors = round(sum(c["error_rate"] for c in consumers), 3)
        return {
            "redis_streams": {
                "total_streams": sum(t["_partitions"] for t in topics),
                "total_consumer_groups": sum(t["_groups"] for t in topics),
                "total_messages": sum(t["length"] for t in topics),
                "pending_messages": sum(t["_pending"] for t in topics),
            },
            "consumers": {
                "active_consumers": sum(c["active_consumers"] for c in consumers),
                "total_lag": sum(c["lag"] for c in consumers),
                "processing_rate": processing,
                "error_rate": errors,
            },
            "performance": {
                "average_latency_ms": average(samples),
                "p95_latency_ms": percentile(samples, 0.95),
                "p99_latency_ms": percentile(samples, 0.99),
                "throughput": round(processing + errors, 3),
            },
            "kafka_topics": None,
        }


@blp.route("/topics")
class TopicMetrics(MethodView):
    @tenant_access()
    @blp.response(200, TopicMetricsPage)
    @blp.doc(security=SECURITY)
    def get(self) -> dict[str, Any]:
        """Per topic: stored length, publishes in total and per second, subscriptions, lag."""
        return {"items": _topic_items(_own_topics())}


@blp.route("/consumers")
class ConsumerMetrics(MethodView):
    @tenant_access()
    @blp.response(200, ConsumerMetricsPage)
    @blp.doc(security=SECURITY)
    def get(self) -> dict[str, Any]:
        """Per subscription: lag, pending, delivery rates, last delivery, live consumers."""
        return {"items": _consumer_items(_own_subscriptions())}


# --- the tenant's view -----------------------------------------------------------------------


def _own_topics() -> list[Topic]:
    session = services().db_session()
    return list(session.scalars(select(Topic).where(Topic.tenant_id == principal().tenant_id)
                                .order_by(Topic.name)))


def _own_subscriptions() -> list[tuple[Subscription, Topic, str]]:
    session = services().db_session()
    rows = session.execute(
        select(Subscription, Topic, Tenant.name)
        .join(Topic, Topic.id == Subscription.topic_id)
        .join(Tenant, Tenant.id == Topic.tenant_id)
        .where(Subscription.tenant_id == principal().tenant_id)
        .order_by(Subscription.created_at, Subscription.id)).all()
    tenant_id = principal().tenant_id
    return [(sub, topic, topic.name if topic.tenant_id == tenant_id else f"{owner}/{topic.name}")
            for sub, topic, owner in rows]


def _topic_items(topics: Sequence[Topic]) -> list[dict[str, Any]]:
    svc = services()
    counts = dict(svc.db_session().execute(
        select(Subscription.topic_id, func.count()).where(
            Subscription.topic_id.in_([t.id for t in topics])).group_by(Subscription.topic_id)
    ).all()) if topics else {}
    windows = _rates().windows([t.id for t in topics])
    items = []
    for topic in topics:
        partitions = svc.streams.partition_stats(topic.id, topic.partition_count)
        groups = [g for p in partitions for g in p.groups]
        window = windows.get(topic.id, Window())
        items.append({
            "name": topic.name,
            "length": sum(p.length for p in partitions),
            "published_total": sum(p.entries_added for p in partitions),
            "publish_rate": window.a_rate,
            "bytes_rate": window.b_rate,
            "subscriptions": counts.get(topic.id, 0),
            "lag": sum(g.lag for g in groups),
            "_partitions": topic.partition_count,
            "_groups": len({g.name for g in groups}),
            "_pending": sum(g.pending for g in groups),
        })
    return items


def _consumer_items(rows: Sequence[tuple[Subscription, Topic, str]]) -> list[dict[str, Any]]:
    svc = services()
    targets = [GroupTarget(topic.id, topic.partition_count,
                           group_name(sub.tenant_id, sub.consumer_group)) for sub, topic, _ in rows]
    views = inspect_groups(svc.redis, svc.keys, targets)
    ids = [sub.id for sub, _, _ in rows]
    rates = _rates()
    windows = rates.windows(ids)
    latencies = rates.latencies(ids)
    instances = {p.get("instance") for p in live_processes(svc.redis, svc.keys)
                 if p.get("kind") == "worker"}
    items = []
    for (sub, _topic, label), target in zip(rows, targets, strict=True):
        view = views.get((target.topic_id, target.group), GroupView())
        window = windows.get(sub.id, Window())
        items.append({
            "id": sub.id, "topic": label, "consumer_group": sub.consumer_group,
            "lag": view.lag, "pending": view.pending,
            "processing_rate": window.a_rate, "error_rate": window.b_rate,
            "last_consumed_at": sub.last_consumed_at,
            "active_consumers": live_consumers(view, sub.consumer_name, instances - {None}),
            "_latencies": latencies.get(sub.id, []),
        })
    return items


def _rates() -> Rates:
    return Rates(services().redis, services().keys)


# --- publishing and HTTP metrics --------------------------------------------------------------


def record_published(topic_name: str, tenant_id: str, sizes: Sequence[int]) -> None:
    """Count newly stored messages in Prometheus (the topic's rate ring is counted by the
    group writer, in the same round trip as the append)."""
    if not sizes:
        return
    metrics.child(metrics.MESSAGES, topic_name, "publish", "published", tenant_id).inc(
        len(sizes))
    started = g.get("metrics_started")
    if started is not None:
        metrics.child(metrics.PUBLISH_LATENCY, topic_name, tenant_id).observe(
            time.perf_counter() - started)


def install(app: Flask) -> None:
    """HTTP request metrics and the Prometheus exposition at `/metrics` (operator token)."""
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    app.add_url_rule("/metrics", "prometheus", _prometheus)


@operator_access
def _prometheus() -> Response:
    """This process's metrics, or, under gunicorn started by `mq api`, every API worker's
    (prometheus-client's multiprocess mode, see `cli.main.metrics_environ`)."""
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
