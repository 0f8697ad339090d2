"""Delayed messages and cron runs are stored in their topic's encoding too."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from redis import Redis

from broker.keys import Keys
from formats.encryption import cached_keyring
from models import Database
from publishing.group import Publisher
from scheduler.recurring import Recurring
from tests.conftest import REDIS_URL
from tests.formats.test_codec import AVRO_ORDER, ORDER, PROTO_ORDER
from tests.formats.test_topics_and_publish import SECRET, _stored_row


def test_delayed_message_is_stored_encrypted(tenant, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm")
    answer = tenant.admin.post("/publish/delayed", {"topic": "vault", "payload": {"card": SECRET},
                                            "delay_ms": 60_000})
    assert answer.status_code == 202, answer.json
    payload, _ = _stored_row(settings, answer.json["message_id"])
    assert SECRET not in payload and "$mq" in payload
    shown = tenant.admin.get(f"/messages/{answer.json['message_id']}").json
    assert shown["payload"] == {"card": SECRET}


def _fire_due(settings) -> None:
    """One pass of the scheduler's cron step, as `mq scheduler` runs it."""
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    database = Database(settings.database_url, pool_size=1)
    keys = Keys(settings.redis_namespace)
    try:
        publisher = Publisher.build(database.engine, redis, keys,
                                    stream_cap=settings.stream_max_len)
        recurring = Recurring(redis, keys, database, publisher,
                              keyring=cached_keyring(settings.mq_master_key,
                                                     settings.mq_old_master_keys))
        assert recurring.fire_due() >= 1
        publisher.close()
    finally:
        redis.close()
        database.dispose()


def _run_id(created: dict) -> str:
    run_ms = int(datetime.fromisoformat(
        created["next_run_at"].replace("Z", "+00:00")).timestamp() * 1000)
    return f"{created['schedule_id']}:{run_ms}"


def test_cron_run_is_stored_encrypted(tenant, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="gzip")
    created = tenant.admin.post("/publish/scheduled", {"topic": "vault",
                                                       "cron": "*/1 * * * * *",
                                                       "payload": {"card": SECRET}})
    assert created.status_code == 201, created.json
    _fire_due(settings)
    run_id = _run_id(created.json)
    payload, headers = _stored_row(settings, run_id)
    assert SECRET not in payload and "$mq" in payload
    assert "X-MQ-Schedule-Id" not in headers
    shown = tenant.admin.get(f"/messages/{run_id}").json
    assert shown["payload"] == {"card": SECRET}
    assert shown["headers"]["X-MQ-Schedule-Id"] == created.json["schedule_id"]


@pytest.mark.parametrize(("fmt", "definition", "payload"), [
    ("protobuf", PROTO_ORDER, {"id": "o-1", "tags": ["gift"]}),
    ("avro", AVRO_ORDER, ORDER),
])
def test_cron_run_on_a_subject_bound_topic_encodes_with_the_subject(
        tenant, settings, fmt, definition, payload):
    registered = tenant.admin.post("/schemas", {"subject": "orders-value", "format": fmt,
                                                "definition": definition})
    assert registered.status_code == 201, registered.json
    tenant.create_queue("orders", message_format=fmt, schema_subject="orders-value")
    created = tenant.admin.post("/publish/scheduled", {"topic": "orders",
                                                       "cron": "*/1 * * * * *",
                                                       "payload": payload})
    assert created.status_code == 201, created.json
    _fire_due(settings)
    run_id = _run_id(created.json)
    stored, _ = _stored_row(settings, run_id)
    assert json.loads(stored)["$mq"]["s"] == registered.json["id"]
    shown = tenant.admin.get(f"/messages/{run_id}").json["payload"]
    assert {key: shown[key] for key in payload} == payload
