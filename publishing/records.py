"""The SQL of message records for publishing: one statement per group, whatever its size.

A group's records, the offsets of earlier groups and the look-up of duplicates
are one statement (`write_group`), run on a connection in autocommit mode: the whole database
step of a group is one round trip, its commit included. The rows travel as one JSON document
and the offsets and look-ups as arrays, so the statement's text never changes with the number
of rows. It goes to the DBAPI cursor directly: through SQLAlchemy's execution machinery such
a statement costs about 0.6 ms of CPU more (measured), more than everything else a single
publish does. Idempotency is resolved by the insert itself (`ON CONFLICT DO NOTHING
RETURNING id`): the rows it does not return are duplicates, answered from the records that
held their `message_id` before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, select, tuple_

from models import MessageRecord, Topic
from models.bulk import PreparedStatement, compact_json

RECORDS = cast(Table, MessageRecord.__table__)

#: The columns a prepared row fills, with their PostgreSQL types.
_COLUMNS = (
    ("id", "varchar"), ("tenant_id", "varchar"), ("topic_id", "varchar"),
    ("message_id", "varchar"), ("message_key", "varchar"), ("correlation_id", "varchar"),
    ("trace_id", "varchar"), ("producer_id", "varchar"), ("headers", "jsonb"),
    ("payload", "jsonb"), ("payload_size", "integer"), ("content_type", "varchar"),
    ("partition_id", "integer"), ("status", "varchar"), ("retry_count", "integer"),
    ("published_at", "timestamptz"), ("scheduled_at", "timestamptz"),
    ("expires_at", "timestamptz"),
)
_TIME_COLUMNS = ("published_at", "scheduled_at", "expires_at")

#: The rows travel as one JSON document (one `json.dumps` in C for the whole group, the
#: payloads inside it as they are), read back by `jsonb_to_recordset`; arrays of 18 columns
#: cost psycopg2 over ten times as much CPU to quote.
_INSERT_NEW = (
    f"INSERT INTO message_records ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT {', '.join(name for name, _ in _COLUMNS)} FROM jsonb_to_recordset(%(rows)s::jsonb) "
    f"AS given({', '.join(f'{name} {kind}' for name, kind in _COLUMNS)}) "
    "ON CONFLICT (tenant_id, message_id) DO NOTHING RETURNING id")
_SET_OFFSETS = (
    "UPDATE message_records SET offset_value = given.offset_value "
    "FROM unnest(%(offset_ids)s::varchar[], %(offsets)s::varchar[]) "
    "AS given(id, offset_value) WHERE message_records.id = given.id")
_STORED = (
    "SELECT r.tenant_id, r.id, r.message_id, r.topic_id, t.name, r.partition_id, "
    "r.offset_value, r.status, r.published_at, r.scheduled_at "
    "FROM unnest(%(lookup_tenants)s::varchar[], %(lookup_ids)s::varchar[]) "
    "AS k(tenant_id, message_id) "
    "JOIN message_records r ON r.tenant_id = k.tenant_id AND r.message_id = k.message_id "
    "JOIN message_topics t ON t.id = r.topic_id")
#: One statement: earlier offsets, new records, and the records that held the looked-up
#: message ids before it (its snapshot precedes its own insert).
_WRITE_GROUP = (
    f"WITH offsets AS ({_SET_OFFSETS}), inserted AS ({_INSERT_NEW}) "
    "SELECT 'new', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL::timestamptz, "
    "NULL::timestamptz FROM inserted "
    f"UNION ALL SELECT 'old', * FROM ({_STORED}) AS stored")
_GROUP_PARAMS = (("rows", "text"), ("offset_ids", "varchar[]"), ("offsets", "varchar[]"),
                 ("lookup_tenants", "varchar[]"), ("lookup_ids", "varchar[]"))
WRITE_GROUP = PreparedStatement("mq_write_group", _GROUP_PARAMS, _WRITE_GROUP)
SET_OFFSETS = PreparedStatement("mq_set_offsets", _GROUP_PARAMS[1:3], _SET_OFFSETS)


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


def write_group(connection: Connection, rows: Sequence[dict[str, Any]],
                offsets: dict[str, str], lookup: Iterable[tuple[str, str]]
                ) -> tuple[set[str], dict[tuple[str, str], StoredRecord]]:
    """Write the offsets (record id -> offset) of earlier groups and insert the rows whose
    (tenant, message id) is free; returns the ids inserted and the records that held the
    `lookup` pairs before (the duplicates). `rows` must not repeat a (tenant, message id).
    The connection must be in autocommit mode: the statement is its own transaction."""
    wanted = set(lookup)
    params: dict[str, Any] = {"rows": compact_json([_document_row(row) for row in rows])}
    params.update(offset_ids=list(offsets), offsets=list(offsets.values()),
                  lookup_tenants=[tenant for tenant, _ in wanted],
                  lookup_ids=[message_id for _, message_id in wanted])
    inserted: set[str] = set()
    stored: dict[tuple[str, str], StoredRecord] = {}
    for kind, *found in WRITE_GROUP.execute(connection, params, fetch=True):
        if kind == "new":
            inserted.add(found[0])
        else:
            stored[(found[0], found[2])] = StoredRecord(*found[1:])
    return inserted, stored


def _document_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON can carry it (timestamps as ISO 8601 text)."""
    out = dict(row)
    for name in _TIME_COLUMNS:
        value = out.get(name)
        if value is not None:
            out[name] = value.isoformat()
    return out


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


def set_offsets(connection: Connection, offsets: dict[str, str], *, lazily: bool = False
                ) -> None:
    """Write stream offsets to their records (record id -> offset); `lazily`: without waiting
    for the commit's flush (autocommit connection)."""
    if offsets:
        SET_OFFSETS.execute(connection, {"offset_ids": list(offsets),
                                         "offsets": list(offsets.values())}, unflushed=lazily)


def delete_records(connection: Connection, record_ids: Sequence[str]) -> None:
    if record_ids:
        connection.execute(delete(RECORDS).where(RECORDS.c.id.in_(record_ids)))


def topic_exists(connection: Connection, topic_id: str) -> bool:
    return connection.scalar(select(Topic.id).where(Topic.id == topic_id)) is not None
