"""`REDIS_WAIT_REPLICAS`: a publish is answered 2xx only once that many replicas have its
append (Redis `WAIT` on the connection that wrote it, on every server written to)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask

from mq.settings import Settings
from tests.conftest import Caller, app_on, make_tenant


@pytest.fixture
def waiting_app(settings: Settings) -> Iterator[Flask]:
    """The single test Redis has no replica: every WAIT for one falls short."""
    yield from app_on(dataclasses.replace(settings, redis_wait_replicas=1,
                                          redis_wait_timeout_ms=50))


@pytest.fixture
def replicated_app(cluster_settings: Settings) -> Iterator[Flask]:
    yield from app_on(dataclasses.replace(cluster_settings, redis_wait_replicas=1,
                                          redis_wait_timeout_ms=2000))


def test_without_the_replicas_a_publish_is_503_and_its_retry_finds_it_stored(
        waiting_app: Flask, app: Flask) -> None:
    admin = make_tenant(waiting_app.test_client()).admin
    admin.post("/queues", {"name": "waits", "partition_count": 2})
    body = {"topic": "waits", "message_id": "w-1", "payload": {"n": 1}}
    answer = admin.post("/publish", body)
    assert answer.status_code == 503, answer.json
    assert answer.json["error"]["code"] == "BROKER_NOT_AVAILABLE"
    assert "replica" in answer.json["error"]["message"]

    batch = admin.post("/publish/batch", {"topic": "waits", "messages": [
        {"message_id": f"b-{i}", "payload": i, "partition": i % 2} for i in range(4)]})
    assert batch.status_code == 503, batch.json

    retry = Caller(app.test_client(), admin.token)  # an API that waits for no replica
    again = retry.post("/publish", body)
    assert again.status_code in (200, 201), again.json
    assert again.json["duplicate"] is True and again.json["offset"], "stored and appended"
    looked_up = retry.get("/messages/w-1")
    assert looked_up.status_code == 200 and looked_up.json["status"] == "published"


def test_on_a_cluster_with_replicas_publishes_are_acknowledged(replicated_app: Flask) -> None:
    admin = make_tenant(replicated_app.test_client()).admin
    admin.post("/queues", {"name": "replicated", "partition_count": 6})
    single = admin.post("/publish", {"topic": "replicated", "payload": "one"})
    assert single.status_code == 201, single.json
    batch = admin.post("/publish/batch", {"topic": "replicated", "messages": [
        {"payload": i, "partition": i % 6} for i in range(12)]})
    assert batch.status_code == 201, batch.json
    assert len({p["partition"] for p in batch.json["partitions"]}) == 6
