"""The tenant's metrics API and the API process's Prometheus exposition, against known traffic
(in process, no workers: nothing is consumed, so every published message is lag)."""

from __future__ import annotations

import pytest

from tests.conftest import OPERATOR_TOKEN
from tests.delivery.conftest import on_each_redis  # noqa: F401 (`settings`: both Redis kinds)
from tests.observability.conftest import parse_exposition, value


def _publish(tenant, topic, count):
    batch = [{"payload": {"n": i, "pad": "x" * 10}} for i in range(count)]
    response = tenant.admin.post("/publish/batch", {"topic": topic, "messages": batch})
    assert response.status_code == 201, response.json


def test_topic_metrics_count_what_was_published(tenant):
    tenant.create_queue("orders", partition_count=2)
    tenant.create_queue("quiet")
    tenant.admin.post("/subscriptions", _webhook_subscription("orders", "billing"))
    _publish(tenant, "orders", 6)
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"one": 1}})

    items = {t["name"]: t for t in tenant.admin.get("/metrics/topics").json["items"]}
    orders = items["orders"]
    assert orders["length"] == 7
    assert orders["published_total"] == 7
    assert orders["publish_rate"] == round(7 / 60, 3)
    assert orders["bytes_rate"] > 0
    assert orders["subscriptions"] == 1
    assert orders["lag"] == 7
    assert items["quiet"] == {"name": "quiet", "length": 0, "published_total": 0,
                              "publish_rate": 0.0, "bytes_rate": 0.0, "subscriptions": 0,
                              "lag": 0}


def test_consumer_metrics_show_lag_and_no_latency_without_deliveries(tenant):
    tenant.create_queue("orders")
    sub = tenant.admin.post("/subscriptions", _webhook_subscription("orders", "billing")).json
    _publish(tenant, "orders", 4)

    items = tenant.key("consumer").get("/metrics/consumers").json["items"]
    assert items == [{"id": sub["id"], "topic": "orders", "consumer_group": "billing",
                      "lag": 4, "pending": 0, "processing_rate": 0.0, "error_rate": 0.0,
                      "last_consumed_at": None, "active_consumers": 0}]
    overview = tenant.key("producer").get("/metrics").json
    assert overview["redis_streams"] == {"total_streams": 1, "total_consumer_groups": 1,
                                         "total_messages": 4, "pending_messages": 0}
    assert overview["consumers"] == {"active_consumers": 0, "total_lag": 4,
                                     "processing_rate": 0.0, "error_rate": 0.0}
    assert overview["performance"] == {"average_latency_ms": None, "p95_latency_ms": None,
                                       "p99_latency_ms": None, "throughput": 0.0}
    assert overview["kafka_topics"] is None


def test_a_tenant_sees_only_its_own_metrics(tenant, other_tenant):
    tenant.create_queue("orders")
    _publish(tenant, "orders", 2)
    assert other_tenant.admin.get("/metrics/topics").json == {"items": []}
    assert other_tenant.admin.get("/metrics/consumers").json == {"items": []}
    assert other_tenant.admin.get("/metrics").json["redis_streams"]["total_messages"] == 0


def test_metrics_need_an_api_key(client):
    for path in ("/metrics", "/metrics/topics", "/metrics/consumers"):
        response = client.get("/api/v1/mq" + path)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "UNAUTHORIZED"
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    response = client.get("/api/v1/mq/metrics", headers=operator)
    assert response.status_code == 401


def test_prometheus_exposition_needs_the_operator_token(client, tenant):
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {tenant.admin.token}"})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "FORBIDDEN"


def test_prometheus_counts_publishes_and_http_requests(client, tenant):
    tenant.create_queue("orders")
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    before = parse_exposition(client.get("/metrics", headers=operator).text)
    _publish(tenant, "orders", 5)
    tenant.admin.post("/publish", {"topic": "orders", "payload": 1})
    tenant.admin.post("/publish", {"topic": "orders", "payload": 1, "message_id": "m-1"})
    tenant.admin.post("/publish", {"topic": "orders", "payload": 1, "message_id": "m-1"})

    response = client.get("/metrics", headers=operator)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    after = parse_exposition(response.text)
    labels = {"topic": "orders", "type": "publish", "status": "published",
              "tenant_id": tenant.id}
    delta = value(after, "mq_messages_total", **labels) - value(before, "mq_messages_total",
                                                                 **labels)
    assert delta == 7  # the duplicate is not published again
    publish_count = value(after, "mq_publish_duration_seconds_count", topic="orders",
                          tenant_id=tenant.id)
    assert publish_count == 3  # one per request that stored something
    route = "/api/v1/mq/publish"
    http = value(after, "mq_http_requests_total", method="POST", route=route, status="201")
    assert http - value(before, "mq_http_requests_total", method="POST", route=route,
                        status="201") >= 2
    assert not any("message_id" in labels for _, labels, _ in after)


@pytest.fixture(autouse=True)
def _no_subscriptions_left(tenant):
    """Delete this test's subscriptions: their webhook does not answer, and workers of later
    tests in the run would keep trying it."""
    yield
    for item in tenant.admin.get("/subscriptions").json["items"]:
        tenant.admin.delete(f"/subscriptions/{item['id']}")


def _webhook_subscription(topic: str, group: str) -> dict:
    return {"topic": topic, "consumer_group": group, "consumer_name": f"{group}-1",
            "subscription_type": "webhook",
            "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}}
