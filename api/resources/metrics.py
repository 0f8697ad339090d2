"""The tenant's metrics: `/metrics`, `/metrics/topics`, `/metrics/consumers` under the base
path (what the figures mean: `api.services.metrics`)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields

from api.auth import principal, tenant_access
from api.context import scope, services
from api.fields import Timestamp
from api.parsing import Blueprint
from api.services import metrics as service

PREFIX = "/metrics"
blp = Blueprint("metrics", __name__, description="Metrics of the tenant's topics and "
                "subscriptions")


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
    def get(self) -> dict[str, Any]:
        """The tenant's streams, consumers and delivery performance at a glance."""
        return service.overview(scope().session, services(), principal().tenant_id)


@blp.route("/topics")
class TopicMetrics(MethodView):
    @tenant_access()
    @blp.response(200, TopicMetricsPage)
    def get(self) -> dict[str, Any]:
        """Per topic: stored length, publishes in total and per second, subscriptions, lag."""
        session = scope().session
        topics = service.own_topics(session, principal().tenant_id)
        return {"items": service.topic_items(session, services(), topics)}


@blp.route("/consumers")
class ConsumerMetrics(MethodView):
    @tenant_access()
    @blp.response(200, ConsumerMetricsPage)
    def get(self) -> dict[str, Any]:
        """Per subscription: lag, pending, delivery rates, last delivery, live consumers."""
        rows = service.own_subscriptions(scope().session, principal().tenant_id)
        return {"items": service.consumer_items(services(), rows)}
