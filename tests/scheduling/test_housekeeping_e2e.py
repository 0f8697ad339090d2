"""Housekeeping through the real scheduler: retention trimming and the outbox sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import select, update

from broker.keys import Keys
from models import Database, MessageRecord, Topic
from models.base import new_id, utcnow
from mq.settings import Settings
from tests.conftest import REDIS_URL, TenantHandle
from tests.delivery.conftest import Processes, Subscriptions, Webhook, publish_many
from tests.processes import wait_until

pytestmark = pytest.mark.e2e


def test_retention_keeps_what_a_paused_subscription_has_not_read(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes, settings: Settings) -> None:
    held, free = tenant.create_queue(), tenant.create_queue()
    for topic in (held, free):
        subscriptions.create(topic["name"], "live", webhook.url(f"/live/{topic['name']}"))
    paused = subscriptions.create(held["name"], "paused", webhook.url("/paused"))
    assert tenant.admin.post(f"/subscriptions/{paused['id']}/pause").status_code == 200
    processes.worker(threads=4)
    for topic in (held, free):
        publish_many(tenant, topic["name"], 20)
        webhook.wait_for(f"/live/{topic['name']}", 20)
    database = Database(settings.database_url, pool_size=1)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(settings.redis_namespace)
    try:
        with database.session() as session:  # every entry is now past retention
            session.execute(update(Topic).where(Topic.id.in_([held["id"], free["id"]]))
                            .values(retention_ms=1))
            session.commit()
        assert redis.xlen(keys.stream(free["id"], 0)) == 20
        # A scheduler an earlier test killed mid-trim may still hold the lock until it expires.
        redis.delete(keys.lock("retention"))
        processes.scheduler()  # trims at start
        # What every group read goes (the last delivered entry stays as the bound) ...
        wait_until(lambda: redis.xlen(keys.stream(free["id"], 0)) <= 1)
        wait_until(lambda: not redis.exists(keys.lock("retention")))
        # ... but nothing the paused subscription has not read.
        assert redis.xlen(keys.stream(held["id"], 0)) == 20
        assert webhook.received("/paused") == []
    finally:
        redis.close()
        database.dispose()


def test_outbox_sweep_hands_over_records_without_offset(
        tenant: TenantHandle, subscriptions: Subscriptions, webhook: Webhook,
        processes: Processes, settings: Settings) -> None:
    topic = tenant.create_queue()
    subscriptions.create(topic["name"], "g", webhook.url("/outbox"))
    processes.worker(threads=2)
    database = Database(settings.database_url, pool_size=1)
    message_id = f"stranded-{new_id()}"
    try:
        with database.session() as session:  # a publisher died before its XADD
            session.add(MessageRecord(
                tenant_id=tenant.id, topic_id=topic["id"], message_id=message_id,
                headers={}, payload={"stranded": True}, payload_size=17, partition_id=0,
                status="published", published_at=utcnow() - timedelta(minutes=1)))
            session.commit()
        processes.scheduler()
        [request] = webhook.wait_for("/outbox", 1)
        assert request.json == {"stranded": True}
        assert request.headers["x-mq-message-id"] == message_id

        def offset() -> str | None:  # the sweep commits after its XADD: the delivery may win
            with database.session() as session:
                return session.scalar(select(MessageRecord.offset_value)
                                      .where(MessageRecord.message_id == message_id))

        assert wait_until(offset, timeout=10)
    finally:
        database.dispose()
