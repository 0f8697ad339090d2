"""The API's Redis-backed endpoints on a Redis Cluster: everything that reads or changes
streams, groups, delay sets and dead letters answers as it does on one Redis."""

from __future__ import annotations

from flask import Flask

from tests.conftest import API, make_tenant


def test_health_reports_the_cluster(cluster_app: Flask) -> None:
    body = cluster_app.test_client().get(f"{API}/health").json
    assert body["status"] == "healthy", body
    redis = body["checks"]["redis"]["details"]
    assert redis["ping"] == "PONG" and redis["memory"]["used_bytes"] > 0


def test_topics_subscriptions_and_their_stats_on_a_cluster(cluster_app: Flask) -> None:
    admin = make_tenant(cluster_app.test_client()).admin
    assert admin.post("/queues", {"name": "orders", "partition_count": 4}).status_code == 201
    sub = admin.post("/subscriptions", {
        "topic": "orders", "consumer_group": "billing", "consumer_name": "b-1",
        "subscription_type": "webhook",
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}})
    assert sub.status_code == 201, sub.json
    published = admin.post("/publish/batch", {"topic": "orders", "messages": [
        {"payload": i, "partition": i % 4} for i in range(20)]})
    assert published.status_code == 201, published.json
    assert admin.post("/publish/delayed", {"topic": "orders", "payload": "later",
                                           "delay_ms": 60_000}).status_code == 202

    topic = admin.get("/queues/orders").json
    assert topic["stats"]["length"] == 20, topic["stats"]
    stats = admin.get(f"/subscriptions/{sub.json['id']}").json["stats"]
    assert stats["lag"] == 20, stats
    metrics = admin.get("/metrics").json["redis_streams"]
    assert metrics["total_streams"] == 4 and metrics["total_messages"] == 20, metrics
    consumers = admin.get("/metrics/consumers").json
    assert consumers["items"][0]["lag"] == 20, consumers

    seek = admin.post(f"/subscriptions/{sub.json['id']}/seek", {"to": "latest"})
    assert seek.status_code == 200, seek.json
    assert admin.get(f"/subscriptions/{sub.json['id']}").json["stats"]["lag"] == 0
    dead = admin.get(f"/subscriptions/{sub.json['id']}/dead-letters").json
    assert dead["items"] == []
    assert admin.delete(f"/subscriptions/{sub.json['id']}/dead-letters").json == {"purged": 0}

    assert admin.post("/queues/orders/purge").json == {"purged": 20}
    assert admin.get("/queues/orders").json["stats"]["length"] == 0
    assert admin.delete("/queues/orders").status_code == 204
