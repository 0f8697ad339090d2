"""GET /health and GET /status, with Redis or the database unreachable."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest
from flask import Flask

from api import create_app
from mq.settings import Settings
from tests.api.conftest import assert_error
from tests.conftest import API, OPERATOR_TOKEN, make_tenant


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def redis_down_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0"))
    yield app
    app.extensions["mq"].database.dispose()


@pytest.fixture(scope="module")
def database_down_app(settings: Settings) -> Iterator[Flask]:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/nothing"
    app = create_app(dataclasses.replace(settings, database_url=url))
    yield app
    app.extensions["mq"].database.dispose()


def test_health_when_everything_is_up(client):
    response = client.get(API + "/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"redis", "database"}
    redis = body["checks"]["redis"]
    assert redis["status"] == "healthy"
    assert redis["details"]["ping"] == "PONG"
    assert isinstance(redis["details"]["memory"], dict)
    assert redis["details"]["memory"]["used_bytes"] > 0
    assert body["checks"]["database"]["status"] == "healthy"
    assert body["checks"]["database"]["details"]["backend"] == "postgresql"


def test_health_is_503_when_redis_is_unreachable(redis_down_app):
    response = redis_down_app.test_client().get(API + "/health")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "unhealthy"
    assert body["checks"]["redis"]["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "healthy"
    assert "Traceback" not in response.get_data(as_text=True)


def test_health_is_503_when_the_database_is_unreachable(database_down_app):
    response = database_down_app.test_client().get(API + "/health")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "unhealthy"
    assert body["checks"]["redis"]["status"] == "healthy"


def test_publish_is_503_broker_not_available_when_redis_is_unreachable(app, redis_down_app):
    tenant = make_tenant(app.test_client())
    tenant.create_queue("down")
    from tests.conftest import Caller

    admin = Caller(redis_down_app.test_client(), tenant.admin.token)
    assert admin.get("/queues").status_code == 200  # metadata still answers
    assert_error(admin.post("/publish", {"topic": "down", "payload": 1}), 503,
                 "BROKER_NOT_AVAILABLE")
    assert_error(admin.get("/queues/down"), 503, "BROKER_NOT_AVAILABLE")


def test_a_publish_refused_by_redis_can_be_retried(app, redis_down_app, redis_client, keys):
    """A 503 leaves nothing behind that would answer the retry as an already stored
    duplicate: the retry publishes the message for real."""
    from tests.conftest import Caller

    tenant = make_tenant(app.test_client())
    queue = tenant.create_queue("retry")
    down = Caller(redis_down_app.test_client(), tenant.admin.token)
    for path, body in (("/publish", {"topic": "retry", "payload": 1, "message_id": "r-1"}),
                       ("/publish/batch", {"topic": "retry", "messages": [
                           {"payload": 2, "message_id": "r-2"}, {"payload": 3}]})):
        assert_error(down.post(path, body), 503, "BROKER_NOT_AVAILABLE")
    assert_error(tenant.admin.get("/messages/r-1"), 404, "MESSAGE_NOT_FOUND")
    retried = tenant.admin.post("/publish", {"topic": "retry", "payload": 1,
                                             "message_id": "r-1"})
    assert retried.status_code == 201, retried.json
    assert retried.json["duplicate"] is False
    batch = tenant.admin.post("/publish/batch", {"topic": "retry", "messages": [
        {"payload": 2, "message_id": "r-2"}]})
    assert batch.status_code == 201 and batch.json["duplicates"] == []
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 2
    assert tenant.admin.get("/messages/r-1").json["offset"] == retried.json["offset"]


def test_delete_refused_by_redis_leaves_the_queue_whole(app, redis_down_app, redis_client,
                                                        keys):
    from tests.conftest import Caller

    tenant = make_tenant(app.test_client())
    queue = tenant.create_queue("keep")
    tenant.admin.post("/publish", {"topic": "keep", "payload": 1})
    down = Caller(redis_down_app.test_client(), tenant.admin.token)
    assert_error(down.delete("/queues/keep"), 503, "BROKER_NOT_AVAILABLE")
    assert tenant.admin.get("/queues/keep").json["stats"]["length"] == 1
    assert tenant.admin.delete("/queues/keep").status_code == 204
    assert redis_client.exists(keys.stream(queue["id"], 0)) == 0


def test_partition_growth_refused_by_redis_changes_nothing(app, redis_down_app, db):
    """Subscribed groups must reach the new partitions; when Redis refuses, nothing changes."""
    from models import Subscription
    from tests.conftest import Caller

    tenant = make_tenant(app.test_client())
    queue = tenant.create_queue("grow", partition_count=2)
    db.add(Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group="g",
                        consumer_name="c", subscription_type="redis_consumer",
                        handler_config={"type": "function", "function": "x:y"}))
    db.commit()
    down = Caller(redis_down_app.test_client(), tenant.admin.token)
    assert_error(down.put("/queues/grow", {"partition_count": 4}), 503, "BROKER_NOT_AVAILABLE")
    assert tenant.admin.get("/queues/grow").json["partition_count"] == 2


def test_calls_are_503_connection_error_when_the_database_is_unreachable(database_down_app):
    from tests.conftest import Caller

    client = database_down_app.test_client()
    assert_error(Caller(client, "mq_any").get("/queues"), 503, "CONNECTION_ERROR")
    assert_error(Caller(client, OPERATOR_TOKEN).get("/tenants"), 503, "CONNECTION_ERROR")


def test_status_shape(client):
    response = client.get(API + "/status")
    assert response.status_code == 200
    body = response.json
    assert set(body) >= {"version", "edition", "uptime_s", "backends", "processes"}
    assert body["edition"] == "standard"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime_s"], int | float) and body["uptime_s"] >= 0
    assert body["backends"] == {"redis_stream": True, "kafka": False}
    assert isinstance(body["processes"]["workers"], list)
    assert "scheduler" in body["processes"]
    for worker in body["processes"]["workers"]:
        assert set(worker) >= {"id", "host", "pid", "last_heartbeat", "subscriptions"}


def test_status_answers_without_redis(redis_down_app):
    response = redis_down_app.test_client().get(API + "/status")
    assert response.status_code == 200
    assert response.json["processes"]["workers"] == []
