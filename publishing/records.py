"""The SQL of message records for publishing: one statement per step, whatever the count.

On PostgreSQL every statement takes its rows as array parameters (`unnest`), so its text
never changes with the number of rows: it is prepared once by SQLAlchemy's statement cache and
costs no per-row compilation. Idempotency is resolved by the insert itself (`ON CONFLICT DO
NOTHING RETURNING id`): the rows it does not return are duplicates, answered from the record
that holds their `message_id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, text, tuple_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from models import MessageRecord, Topic

RECORDS = MessageRecord.__table__

#: The columns a prepared row fills, with their PostgreSQL array types.
_COLUMNS = (
    ("id", "varchar"), ("tenant_id", "varchar"), ("topic_id", "varchar"),
    ("message_id", "varchar"), ("message_key", "varchar"), ("correlation_id", "varchar"),
    ("trace_id", "varchar"), ("producer_id", "varchar"), ("headers", "jsonb"),
    ("payload", "jsonb"), ("payload_size", "integer"), ("content_type", "varchar"),
    ("partition_id", "integer"), ("status", "varchar"), ("retry_count", "integer"),
    ("published_at", "timestamptz"), ("scheduled_at", "timestamptz"),
    ("expires_at", "timestamptz"),
)
_JSON_COLUMNS = ("headers", "payload")

_INSERT_NEW = text(
    f"INSERT INTO message_records ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:{n} AS {t}[])' for n, t in _COLUMNS)}) "
    "ON CONFLICT (tenant_id, message_id) DO NOTHING RETURNING id")

_SET_OFFSETS = text(
    "UPDATE message_records SET offset_value = given.offset_value "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:offsets AS varchar[])) "
    "AS given(id, offset_value) WHERE message_records.id = given.id")


@dataclass(frozen=True)
class StoredRecord:
    """What a duplicate's answer repeats of the record that holds its `message_id`."""

    record_id: str
    message_id: str
    topic_id: str
    topic_name: str
    partition: int
    offset: str | None
    status: str
    published_at: datetime
    scheduled_at: datetime | None


def insert_new(connection: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the rows whose (tenant, message id) is not taken; returns the ids inserted.
    `rows` must not repeat a (tenant, message id) among themselves."""
    if not rows:
        return set()
    if connection.dialect.name != "postgresql":  # SQLite, for `mq dev` without PostgreSQL
        return _insert_new_one_by_one(connection, rows)
    columns: dict[str, list[Any]] = {name: [] for name, _ in _COLUMNS}
    for row in rows:
        for name, values in columns.items():
            value = row.get(name)
            values.append(_json(value) if name in _JSON_COLUMNS else value)
    return set(connection.execute(_INSERT_NEW, columns).scalars())


def _insert_new_one_by_one(connection: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    inserted: set[str] = set()
    for row in rows:
        statement = (sqlite_insert(RECORDS).values(row)
                     .on_conflict_do_nothing(index_elements=["tenant_id", "message_id"])
                     .returning(RECORDS.c.id))
        inserted.update(connection.execute(statement).scalars())
    return inserted


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stored_records(connection: Connection, keys: Iterable[tuple[str, str]]
                   ) -> dict[tuple[str, str], StoredRecord]:
    """The records holding the given (tenant id, message id) pairs, by pair."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = connection.execute(
        select(RECORDS.c.tenant_id, RECORDS.c.id, RECORDS.c.message_id, RECORDS.c.topic_id,
               Topic.name, RECORDS.c.partition_id, RECORDS.c.offset_value, RECORDS.c.status,
               RECORDS.c.published_at, RECORDS.c.scheduled_at)
        .join(Topic, Topic.id == RECORDS.c.topic_id)
        .where(tuple_(RECORDS.c.tenant_id, RECORDS.c.message_id).in_(wanted)))
    return {(row[0], row[2]): StoredRecord(*row[1:]) for row in rows}


def set_offsets(connection: Connection, offsets: dict[str, str]) -> None:
    """Write stream offsets to their records (record id -> offset)."""
    if not offsets:
        return
    if connection.dialect.name == "postgresql":
        connection.execute(_SET_OFFSETS, {"ids": list(offsets), "offsets": list(offsets.values())})
        return
    connection.execute(
        update(RECORDS).where(RECORDS.c.id == bindparam("record_id"))
        .values(offset_value=bindparam("offset")),
        [{"record_id": rid, "offset": off} for rid, off in offsets.items()])


def delete_records(connection: Connection, record_ids: Sequence[str]) -> None:
    if record_ids:
        connection.execute(delete(RECORDS).where(RECORDS.c.id.in_(record_ids)))


def topic_exists(connection: Connection, topic_id: str) -> bool:
    return connection.scalar(select(Topic.id).where(Topic.id == topic_id)) is not None
