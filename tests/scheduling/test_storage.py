"""The storage job on real PostgreSQL, with the clock it judges by moved by the test: days
created ahead, days past retention dropped whole (kept while they hold scheduled messages),
expired idempotency keys deleted, the storage figures; and the settings' bounds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from api import create_app
from models import Database, upgrade
from models.base import utcnow
from models.database import temporary_database
from models.partitions import DAYS_AHEAD, day_start, existing_partitions, storage, utc_day
from mq.errors import ConfigurationError
from mq.settings import Settings
from scheduler.storage import RecordStorage
from tests.conftest import ADMIN_DATABASE_URL, OPERATOR_TOKEN, Caller
from workers.records import _store

DAY = timedelta(days=1)


@pytest.fixture
def database() -> Iterator[Database]:
    """A database of its own: moving the clock ahead drops whole days."""
    with temporary_database(ADMIN_DATABASE_URL, "mqstorage") as url:
        upgrade(url)
        database = Database(url, pool_size=2)
        yield database
        database.dispose()


def fill(database: Database, *, retention_days: int, days: list[date]) -> dict[str, str]:
    """A tenant, a topic kept `retention_days`, a subscription, and on each of `days` one
    message record and one delivery record at noon."""
    ids = {name: str(uuid.uuid4()) for name in ("tenant", "topic", "subscription")}
    with database.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO tenants (id, name, quotas, created_at, updated_at) "
            "VALUES (:tenant, :tenant, '{}', now(), now())"), ids)
        connection.execute(text(
            "INSERT INTO message_topics (id, tenant_id, name, description, topic_type, "
            "partition_count, replication_factor, retention_ms, max_message_bytes, "
            "message_format, compression_type, encryption, is_public, allowed_producers, "
            "allowed_consumers, status, created_at, updated_at) VALUES (:topic, :tenant, "
            "'orders', '', 'standard', 1, 1, :retention, 1024, 'json', 'none', 'none', false, "
            "'[]', '[]', 'active', now(), now())"),
            {**ids, "retention": retention_days * 86_400_000})
        connection.execute(text(
            "INSERT INTO message_subscriptions (id, tenant_id, topic_id, consumer_group, "
            "consumer_name, subscription_type, offset_reset_policy, max_poll_records, "
            "session_timeout_ms, heartbeat_interval_ms, handler_config, dead_letter_expired, "
            "max_retry_attempts, retry_delay_ms, max_retry_delay_ms, status, created_at, "
            "updated_at) VALUES (:subscription, :tenant, :topic, 'g', 'c', 'redis_consumer', "
            "'latest', 100, 30000, 3000, '{}', false, 3, 1000, 60000, 'active', now(), now())"),
            ids)
        for day in days:
            record(connection, ids, f"m-{day}", day_start(day) + DAY / 2)
    return ids


def record(connection, ids: dict[str, str], message_id: str, at, status: str = "published"
           ) -> None:
    params = {**ids, "id": str(uuid.uuid4()), "m": message_id, "at": at, "status": status}
    connection.execute(text(
        "INSERT INTO message_records (id, tenant_id, topic_id, message_id, headers, payload, "
        "payload_size, content_type, partition_id, status, retry_count, published_at) VALUES "
        "(:id, :tenant, :topic, :m, '{}', '1', 1, 'application/json', 0, :status, 0, :at)"),
        params)
    connection.execute(text(
        "INSERT INTO consumption_records (id, tenant_id, subscription_id, message_id, "
        "consumer_instance, status, retry_count, consumed_at) VALUES "
        "(:id, :tenant, :subscription, :m, 'w', 'success', 0, :at)"), params)


def days_of(database: Database, table: str) -> list[date]:
    with database.engine.connect() as connection:
        return [p.day for p in existing_partitions(connection, table)]


def count(database: Database, table: str) -> int:
    with database.engine.connect() as connection:
        return int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


def test_days_are_created_ahead_and_dropped_after_their_retention(database: Database) -> None:
    today = utc_day(utcnow())
    assert days_of(database, "message_records") == [today + n * DAY
                                                    for n in range(DAYS_AHEAD + 1)]
    fill(database, retention_days=3, days=[today, today + DAY, today + 2 * DAY])
    settings = Settings(mq_record_retention_days=30, mq_delivery_record_retention_days=2)
    job = RecordStorage(settings, database)

    later = day_start(today + 4 * DAY) + timedelta(hours=1)  # the clock moved 4 days on
    report = job.run(now=later)
    # Delivery records are kept 2 days: today's and tomorrow's days end before later - 2 d.
    assert [p.day for p in report.dropped if p.table == "consumption_records"] == [
        today, today + DAY]
    # Message records are kept as long as the longest topic retention (3 days): today's.
    assert [p.day for p in report.dropped if p.table == "message_records"] == [today]
    assert days_of(database, "message_records")[0] == today + DAY
    assert days_of(database, "message_records")[-1] == utc_day(later) + DAYS_AHEAD * DAY
    assert {p.day for p in report.created} == {
        utc_day(later) + n * DAY for n in range(DAYS_AHEAD - 3, DAYS_AHEAD + 1)}
    assert count(database, "message_records") == 2
    assert count(database, "consumption_records") == 1
    assert job.run(now=later).dropped == []  # nothing more to do at the same time


def test_record_retention_is_capped_and_at_least_the_idempotency_window(
        database: Database) -> None:
    today = utc_day(utcnow())
    fill(database, retention_days=365, days=[today, today + DAY])
    capped = RecordStorage(Settings(mq_record_retention_days=2), database)
    report = capped.run(now=day_start(today + 3 * DAY) + timedelta(minutes=1))
    assert [p.day for p in report.dropped if p.table == "message_records"] == [today]

    with database.engine.begin() as connection:  # every topic keeps minutes only
        connection.execute(text("UPDATE message_topics SET retention_ms = 60000"))
    report = capped.run(now=day_start(today + 3 * DAY) - timedelta(minutes=1))
    assert [p.day for p in report.dropped if p.table == "message_records"] == []  # < 24 h
    report = capped.run(now=day_start(today + 3 * DAY) + timedelta(minutes=1))
    assert [p.day for p in report.dropped if p.table == "message_records"] == [today + DAY]


def test_a_day_holding_scheduled_messages_is_kept_until_they_are_released(
        database: Database) -> None:
    today = utc_day(utcnow())
    ids = fill(database, retention_days=1, days=[today])
    with database.engine.begin() as connection:
        record(connection, ids, "later", day_start(today) + timedelta(hours=1),
               status="scheduled")
    job = RecordStorage(Settings(mq_record_retention_days=1), database)
    report = job.run(now=day_start(today + 3 * DAY))
    assert [p.day for p in report.held] == [today]
    assert today in days_of(database, "message_records")
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE message_records SET status = 'published'"))
    report = job.run(now=day_start(today + 3 * DAY))
    assert [p.day for p in report.dropped if p.table == "message_records"] == [today]


def test_expired_idempotency_keys_are_deleted_in_batches(database: Database,
                                                         monkeypatch) -> None:
    monkeypatch.setattr("scheduler.storage.KEY_TRIM_BATCH", 7)
    ids = fill(database, retention_days=1, days=[])
    now = utcnow()
    with database.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO idempotency_keys (tenant_id, message_id, record_id, published_at) "
            "SELECT :tenant, 'k' || n, 'r' || n, :now - n * interval '1 hour' "
            "FROM generate_series(0, 47) AS n"), {**ids, "now": now})
    deleted = RecordStorage(Settings(), database).trim_keys(now)
    assert deleted == 24  # 24 h old and older: hours 24..47
    assert count(database, "idempotency_keys") == 24


def test_storage_figures_come_from_the_catalog(database: Database) -> None:
    today = utc_day(utcnow())
    fill(database, retention_days=7, days=[today])
    RecordStorage(Settings(), database).run()  # analyzes today's partitions
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE message_records"))  # the parent's estimate too
    with database.engine.connect() as connection:
        figures = {s.table: s for s in storage(connection, ["message_records",
                                                            "consumption_records"])}
    assert figures["message_records"].rows == 1
    assert figures["consumption_records"].bytes > 0
    assert figures["message_records"].oldest_day == today


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_retention_settings_must_be_whole_days(value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({"MQ_RECORD_RETENTION_DAYS": value})
    assert Settings.from_env({"MQ_DELIVERY_RECORD_RETENTION_DAYS": "1"}
                             ).mq_delivery_record_retention_days == 1


def test_writers_create_a_missing_day_rather_than_fail(database: Database, settings) -> None:
    """Were no scheduler to run for `DAYS_AHEAD` days, publishes and delivery records would
    find today without its partition: the writer creates it and writes."""
    today = utc_day(utcnow())
    with database.engine.begin() as connection:
        for table in ("message_records", "consumption_records"):
            connection.execute(text(f"DROP TABLE {table}_p{today:%Y%m%d}"))
    app = create_app(replace(settings, database_url=database.url), database=database)
    try:
        operator = Caller(app.test_client(), OPERATOR_TOKEN)
        key = operator.post("/tenants", {"name": "late"}).json["admin_key"]
        admin = Caller(operator.client, key)
        assert admin.post("/queues", {"name": "q"}).status_code == 201
        published = admin.post("/publish", {"topic": "q", "payload": 1, "message_id": "m"})
        assert published.status_code == 201, published.json
    finally:
        app.extensions["mq"].writer.stop()
    assert count(database, "message_records") == 1

    with database.engine.begin() as connection:
        connection.execute(text(f"DROP TABLE consumption_records_p{today:%Y%m%d}"))
    ids = fill(database, retention_days=1, days=[])
    _store(database, [("consumption", {
        "id": str(uuid.uuid4()), "tenant_id": ids["tenant"],
        "subscription_id": ids["subscription"], "message_id": "m", "consumer_instance": "w",
        "status": "success", "retry_count": 0, "consumed_at": utcnow()})])
    assert count(database, "consumption_records") == 1
