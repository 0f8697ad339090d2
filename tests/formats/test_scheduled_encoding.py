"""Delayed messages and cron runs are stored in their topic's encoding too."""

from __future__ import annotations

from datetime import datetime

from redis import Redis

from broker.delays import DelaySet
from broker.keys import Keys
from models import Database
from mq.crypto import cached_keyring
from scheduler.recurring import Recurring
from tests.conftest import REDIS_URL
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


def test_cron_run_is_stored_encrypted(tenant, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="gzip")
    created = tenant.admin.post("/publish/scheduled", {"topic": "vault",
                                                       "cron": "*/1 * * * * *",
                                                       "payload": {"card": SECRET}})
    assert created.status_code == 201, created.json
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    database = Database(settings.database_url, pool_size=1)
    keys = Keys(settings.redis_namespace)
    try:
        recurring = Recurring(redis, keys, database,
                              DelaySet(redis, keys, stream_cap=settings.stream_max_len),
                              keyring=cached_keyring(settings.mq_master_key,
                                                     settings.mq_old_master_keys))
        assert recurring.fire_due() >= 1
    finally:
        redis.close()
        database.dispose()
    run_ms = int(datetime.fromisoformat(
        created.json["next_run_at"].replace("Z", "+00:00")).timestamp() * 1000)
    run_id = f"{created.json['schedule_id']}:{run_ms}"
    payload, headers = _stored_row(settings, run_id)
    assert SECRET not in payload and "$mq" in payload
    assert "X-MQ-Schedule-Id" not in headers
    shown = tenant.admin.get(f"/messages/{run_id}").json
    assert shown["payload"] == {"card": SECRET}
    assert shown["headers"]["X-MQ-Schedule-Id"] == created.json["schedule_id"]
