"""The migration to partitioned records, on a populated database: every row is kept, in the
partition of its day; the last 24 h of message ids stay taken; the downgrade copies back."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from sqlalchemy import text

from models import Database, upgrade
from models.base import utcnow
from models.database import alembic_config, temporary_database
from models.partitions import utc_day
from tests.conftest import ADMIN_DATABASE_URL
from tests.scheduling.test_storage import fill, record

TABLES = (("message_records", "published_at"), ("consumption_records", "consumed_at"))


def rows(database: Database, table: str, time: str) -> list[tuple[str, object]]:
    with database.engine.connect() as connection:
        return list(connection.execute(text(f"SELECT id, {time} FROM {table} ORDER BY id")))


def test_a_populated_database_is_partitioned_with_every_row_kept() -> None:
    with temporary_database(ADMIN_DATABASE_URL, "mqmigrate") as url:
        upgrade(url, "0002")
        database = Database(url, pool_size=1)
        try:
            now = utcnow()
            ids = fill(database, retention_days=7,
                       days=[utc_day(now - timedelta(days=n)) for n in (40, 3, 2)])
            with database.engine.begin() as connection:
                record(connection, ids, "recent", now - timedelta(hours=2))
            before = {table: rows(database, table, time) for table, time in TABLES}
            assert len(before["message_records"]) == 4

            upgrade(url)
            with database.engine.connect() as connection:
                for table, time in TABLES:
                    assert rows(database, table, time) == before[table]
                    wrong_day = connection.scalar(text(
                        f"SELECT count(*) FROM {table} WHERE tableoid::regclass::text <> "
                        f"'{table}_p' || to_char({time} AT TIME ZONE 'UTC', 'YYYYMMDD')"))
                    assert wrong_day == 0  # every row in the partition of its day
                taken = connection.execute(text("SELECT message_id FROM idempotency_keys"))
                assert list(taken.scalars()) == ["recent"]  # the last 24 h's ids only

            database.engine.dispose()
            command.downgrade(alembic_config(url), "0002")
            for table, time in TABLES:
                assert rows(database, table, time) == before[table]
            with database.engine.connect() as connection:
                kinds = connection.execute(text(
                    "SELECT relkind FROM pg_class WHERE relname IN "
                    "('message_records', 'consumption_records')")).scalars()
                assert set(kinds) == {"r"}  # plain tables again
        finally:
            database.dispose()
