"""The SQL of message records for publishing: one statement per group, whatever its size.

A group's records, the offsets of earlier groups and the look-up of duplicates
are one statement (`write_group`), run on a connection in autocommit mode: the whole database
step of a group is one round trip, its commit included. The rows travel as one JSON document
and the offsets and look-ups as arrays, so the statement's text never changes with the number
of rows. It goes to the DBAPI cursor directly: through SQLAlchemy's execution machinery such
a statement costs about 0.6 ms of CPU more (measured), more than everything else a single
publish does. Idempotency is resolved by the statement itself: each row claims its
`(tenant, message id)` in `idempotency_keys` (`ON CONFLICT … DO UPDATE … WHERE` the key is
older than 24 h), and only rows that claimed theirs are inserted; the others are duplicates,
answered from the records that hold their `message_id`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, delete, select, tuple_

from models import IdempotencyKey, MessageRecord, Topic
from models.base import utcnow
from models.bulk import PreparedStatement, compact_json
from models.messages import IDEMPOTENCY_WINDOW

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
_WINDOW_SQL = f"interval '{int(IDEMPOTENCY_WINDOW.total_seconds())} seconds'"

#: The rows travel as one JSON document (one `json.dumps` in C for the whole group, the
#: payloads inside it as they are), read back by `jsonb_to_recordset`; arrays of 18 columns
#: cost psycopg2 over ten times as much CPU to quote.
_GIVEN = (
    f"SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) "
    f"AS given({', '.join(f'{name} {kind}' for name, kind in _COLUMNS)})")
#: Idempotency: a row claims its (tenant, message id) in `idempotency_keys`, or takes over a
#: key older than the window; only rows that claimed theirs are inserted. A concurrent
#: statement claiming the same key waits for this one's commit, then finds it taken.
_CLAIM = (
    "INSERT INTO idempotency_keys (tenant_id, message_id, record_id, published_at) "
    "SELECT tenant_id, message_id, id, published_at FROM given "
    "ON CONFLICT (tenant_id, message_id) DO UPDATE "
    "SET record_id = excluded.record_id, published_at = excluded.published_at "
    f"WHERE idempotency_keys.published_at <= excluded.published_at - {_WINDOW_SQL} "
    "RETURNING record_id")
_INSERT_NEW = (
    f"INSERT INTO message_records ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT {', '.join(name for name, _ in _COLUMNS)} FROM given "
    "WHERE id IN (SELECT record_id FROM claimed) RETURNING id")
#: By id and publish time: each row's update touches one partition.
_SET_OFFSETS = (
    "UPDATE message_records SET offset_value = given.offset_value "
    "FROM unnest(%(offset_ids)s::varchar[], %(offset_times)s::timestamptz[], "
    "%(offsets)s::varchar[]) AS given(id, published_at, offset_value) "
    "WHERE message_records.id = given.id AND message_records.published_at = given.published_at")
#: The records holding message ids taken since `taken_since` (a released scheduled message's
#: record moved to its release time, never earlier than its key's: partitions before the
#: key's time are pruned).
_STORED = (
    "SELECT r.tenant_id, r.id, r.message_id, r.topic_id, t.name, r.partition_id, "
    "r.offset_value, r.status, r.published_at, r.scheduled_at "
    "FROM unnest(%(lookup_tenants)s::varchar[], %(lookup_ids)s::varchar[]) "
    "AS l(tenant_id, message_id) "
    "JOIN idempotency_keys k ON k.tenant_id = l.tenant_id AND k.message_id = l.message_id "
    "AND k.published_at > %(taken_since)s::timestamptz "
    "JOIN message_records r ON r.id = k.record_id AND r.published_at >= k.published_at "
    "JOIN message_topics t ON t.id = r.topic_id")
#: One statement: earlier offsets, new records, and the records that held the looked-up
#: message ids before it (its snapshot precedes its own insert).
_WRITE_GROUP = (
    f"WITH offsets AS ({_SET_OFFSETS}), given AS ({_GIVEN}), claimed AS ({_CLAIM}), "
    f"inserted AS ({_INSERT_NEW}) "
    "SELECT 'new', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL::timestamptz, "
    "NULL::timestamptz FROM inserted "
    f"UNION ALL SELECT 'old', * FROM ({_STORED}) AS stored")
_OFFSET_PARAMS = (("offset_ids", "varchar[]"), ("offset_times", "timestamptz[]"),
                  ("offsets", "varchar[]"))
_GROUP_PARAMS = (("rows", "text"), *_OFFSET_PARAMS, ("lookup_tenants", "varchar[]"),
                 ("lookup_ids", "varchar[]"), ("taken_since", "timestamptz"))
WRITE_GROUP = PreparedStatement("mq_write_group", _GROUP_PARAMS, _WRITE_GROUP)
SET_OFFSETS = PreparedStatement("mq_set_offsets", _OFFSET_PARAMS, _SET_OFFSETS)


class Offset(NamedTuple):
    """A record's stream offset, with the publish time that finds its partition."""

    value: str
    published_at: datetime


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
                offsets: dict[str, Offset], lookup: Iterable[tuple[str, str]]
                ) -> tuple[set[str], dict[tuple[str, str], StoredRecord]]:
    """Write the offsets (record id -> offset) of earlier groups and insert the rows whose
    (tenant, message id) is free (see `_CLAIM`); returns the ids inserted and the records
    that held the `lookup` pairs before (the duplicates). `rows` must not repeat a (tenant,
    message id). The connection must be in autocommit mode: the statement is its own
    transaction."""
    wanted = set(lookup)
    params: dict[str, Any] = {"rows": compact_json([_document_row(row) for row in rows])}
    params.update(_offset_params(offsets), taken_since=utcnow() - IDEMPOTENCY_WINDOW,
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
    """The records holding the given (tenant id, message id) pairs, by pair (as `_STORED`)."""
    wanted = set(keys)
    if not wanted:
        return {}
    key = IdempotencyKey
    rows = connection.execute(
        select(RECORDS.c.tenant_id, RECORDS.c.id, RECORDS.c.message_id, RECORDS.c.topic_id,
               Topic.name, RECORDS.c.partition_id, RECORDS.c.offset_value, RECORDS.c.status,
               RECORDS.c.published_at, RECORDS.c.scheduled_at)
        .select_from(key)
        .join(RECORDS, (RECORDS.c.id == key.record_id)
              & (RECORDS.c.published_at >= key.published_at))
        .join(Topic, Topic.id == RECORDS.c.topic_id)
        .where(tuple_(key.tenant_id, key.message_id).in_(wanted),
               key.published_at > utcnow() - IDEMPOTENCY_WINDOW))
    return {(row[0], row[2]): StoredRecord(*row[1:]) for row in rows}


def set_offsets(connection: Connection, offsets: dict[str, Offset], *, lazily: bool = False
                ) -> None:
    """Write stream offsets to their records (record id -> offset); `lazily`: without waiting
    for the commit's flush (autocommit connection)."""
    if offsets:
        SET_OFFSETS.execute(connection, _offset_params(offsets), unflushed=lazily)


def _offset_params(offsets: dict[str, Offset]) -> dict[str, list[Any]]:
    return {"offset_ids": list(offsets),
            "offset_times": [offset.published_at for offset in offsets.values()],
            "offsets": [offset.value for offset in offsets.values()]}


def delete_records(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Delete records (given as their rows) and free their message ids."""
    if not rows:
        return
    connection.execute(delete(RECORDS).where(
        tuple_(RECORDS.c.id, RECORDS.c.published_at).in_(
            [(row["id"], row["published_at"]) for row in rows])))
    key = IdempotencyKey
    connection.execute(delete(key).where(tuple_(key.tenant_id, key.message_id, key.record_id)
                                         .in_([(row["tenant_id"], row["message_id"], row["id"])
                                               for row in rows])))


def topic_exists(connection: Connection, topic_id: str) -> bool:
    return connection.scalar(select(Topic.id).where(Topic.id == topic_id)) is not None
