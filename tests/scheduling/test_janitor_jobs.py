"""Scheduler leadership, dead-letter retention and consumer reaping, on real Redis and
PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import select

from broker.heartbeats import Lease
from broker.keys import Keys, group_name
from models import Database, MessageRecord
from models.base import utcnow
from publishing.group import Publisher
from scheduler.housekeeping import DEAD_LETTER_RETENTION_MS, Housekeeping
from scheduler.janitor import reap_consumers
from tests.conftest import REDIS_URL
from tests.processes import wait_until

DAY_MS = 24 * 3600 * 1000


def test_one_leader_at_a_time_and_a_standby_takes_over(redis_namespace):
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    key = Keys(redis_namespace).lock(f"leader-{uuid.uuid4().hex[:6]}")
    first = Lease(redis, key, "first", ttl_ms=300)
    second = Lease(redis, key, "second", ttl_ms=300)
    assert first.renew() is True
    assert second.renew() is False
    assert first.renew() is True  # renewing keeps it
    time.sleep(0.45)  # the first stops renewing: its lease runs out
    assert second.renew() is True
    assert first.renew() is False


def _subscribe(tenant, topic: str, **fields) -> str:
    response = tenant.admin.post("/subscriptions", {
        "topic": topic, "consumer_group": f"g-{uuid.uuid4().hex[:6]}",
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}, **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def test_dead_letter_listings_keep_their_dead_letter_topics_retention(tenant, settings):
    tenant.create_queue("orders")
    tenant.create_queue("orders.deadletter", retention_ms=2 * DAY_MS)
    with_topic = _subscribe(tenant, "orders")
    without_topic = _subscribe(tenant, "orders", dead_letter_queue="orders.failed")
    keys = Keys(settings.redis_namespace)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    now_ms = int(time.time() * 1000)
    ages_ms = {"old": 10 * DAY_MS, "middle": 3 * DAY_MS, "new": 1000}
    for subscription_id in (with_topic, without_topic):
        for name, age in ages_ms.items():
            redis.xadd(keys.dead_letters(subscription_id), {"name": name},
                       id=f"{now_ms - age}-0")
    database = Database(settings.database_url)
    housekeeping = Housekeeping(redis, keys, database, Publisher.build(
        database.engine, redis, keys, stream_cap=settings.stream_max_len))
    try:
        housekeeping.trim_dead_letters(now_ms)
    finally:
        database.dispose()

    def names(subscription_id: str) -> list[str]:
        return [fields["name"] for _, fields in redis.xrange(keys.dead_letters(subscription_id))]

    assert names(with_topic) == ["new"]  # the dead-letter topic keeps two days
    assert DEAD_LETTER_RETENTION_MS > 3 * DAY_MS
    assert names(without_topic) == ["middle", "new"]  # no such topic yet: a week


def test_reaping_removes_idle_consumers_that_hold_nothing(tenant, settings):
    topic = tenant.create_queue("orders")
    group = f"g-{uuid.uuid4().hex[:6]}"
    response = tenant.admin.post("/subscriptions", {
        "topic": "orders", "consumer_group": group,
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}})
    assert response.status_code == 201, response.json
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(settings.redis_namespace)
    stream, redis_group = keys.stream(topic["id"], 0), group_name(tenant.id, group)
    tenant.admin.post("/publish", {"topic": "orders", "payload": 1})
    redis.xgroup_createconsumer(stream, redis_group, "idle-and-empty")
    redis.xreadgroup(redis_group, "holds-one", {stream: ">"}, count=1)
    time.sleep(0.05)
    assert reap_consumers(settings, redis, keys, idle_ms=10) >= 1
    left = {c["name"]: c["pending"] for c in redis.xinfo_consumers(stream, redis_group)}
    assert left == {"holds-one": 1}  # a consumer with pending entries is never removed


def test_outbox_sweep_waits_out_the_lease_of_a_scheduler_that_died_sweeping(tenant, settings):
    """A scheduler killed mid-sweep never gives its lease up: it runs out within LEASE_MS."""
    topic = tenant.create_queue("stranded")
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(settings.redis_namespace)
    database = Database(settings.database_url, pool_size=1)
    housekeeping = Housekeeping(redis, keys, database, Publisher.build(
        database.engine, redis, keys, stream_cap=settings.stream_max_len))
    message_id = f"stranded-{uuid.uuid4().hex[:8]}"
    try:
        with database.session() as session:  # a publisher died before its XADD
            session.add(MessageRecord(
                tenant_id=tenant.id, topic_id=topic["id"], message_id=message_id, headers={},
                payload={"n": 1}, payload_size=7, partition_id=0, status="published",
                published_at=utcnow() - timedelta(minutes=1)))
            session.commit()
        redis.set(keys.lock("outbox"), "a-dead-scheduler", px=300)
        assert housekeeping.sweep_outbox() == 0
        time.sleep(0.4)
        assert housekeeping.sweep_outbox() >= 1
        assert redis.exists(keys.lock("outbox")) == 0  # given up once done
        with database.session() as session:
            assert session.scalar(select(MessageRecord.offset_value).where(
                MessageRecord.message_id == message_id))
    finally:
        database.dispose()
        redis.close()


@pytest.mark.e2e
def test_a_standby_scheduler_is_shown_as_leader_within_seconds_of_the_leaders_death(
        client, processes):
    first = processes.scheduler()
    wait_until(lambda: _leader(client) == first.pid, timeout=10)
    second = processes.scheduler()
    processes.kill(first)
    killed = time.monotonic()
    wait_until(lambda: _leader(client) == second.pid, timeout=10)
    print(f"\nstandby shown as leader {time.monotonic() - killed:.1f} s after the kill")


def _leader(client) -> int | None:
    scheduler = client.get("/api/v1/mq/status").json["processes"]["scheduler"]
    return scheduler["pid"] if scheduler and scheduler.get("leader") else None
