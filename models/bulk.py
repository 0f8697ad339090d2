"""Bulk inserts (COPY), server-side prepared statements, and the DBAPI cursor helper they
and the publishing core's hot-path SQL share."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def copy_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys: column names) into `table`, in the session's
    transaction.

    COPY costs a fraction of the CPU of a multi-row INSERT (no statement to compile, no
    parameters to process: a quarter, measured in the workers' records writer). Errors
    surface as SQLAlchemy's (a duplicate key is an `IntegrityError`).
    """
    if not rows:
        return
    columns = list(rows[0])
    as_json = [isinstance(table.c[name].type, JSON) for name in columns]
    text = io.StringIO()
    for row in rows:
        text.write("\t".join(_copy_value(row[name], is_json)
                             for name, is_json in zip(columns, as_json, strict=True)))
        text.write("\n")
    text.seek(0)
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with dbapi_cursor(session.connection(), statement) as cursor:
        cursor.copy_expert(statement, text)


@contextmanager
def dbapi_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """A cursor of the connection's DBAPI connection, in its transaction, for statements
    SQLAlchemy's execution machinery would make costly (COPY, hot-path SQL). Errors come as
    SQLAlchemy's (`IntegrityError`, `OperationalError` marked `connection_invalidated` when
    the connection broke), as from `connection.execute`."""
    dialect = connection.dialect
    dbapi_connection = connection.connection.dbapi_connection
    cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, dbapi_connection, cursor)
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=gone, ismulti=False) from None
    finally:
        if not cursor.closed:
            cursor.close()


@dataclass(frozen=True)
class PreparedStatement:
    """A statement prepared once per database connection (`PREPARE`) and run with `EXECUTE`,
    always with its generic plan.

    The publishing core's statements join several CTEs; planning them costs PostgreSQL more
    CPU than running them for a group of a few messages (measured: a two-message group 670 µs
    of server CPU planned each time, 300 µs prepared with its generic plan; a 1,000-message
    group 79 ms with a custom plan, 41 ms generic). The generic plan is forced
    (`plan_cache_mode`, set for the connection, which only ever runs these as prepared
    statements) because PostgreSQL's estimate for a set-returning function of its parameters
    makes it keep re-planning otherwise. Sequential scans are disabled for the session: these
    statements only look rows up by key, and a generic plan made while a table was nearly
    empty would otherwise scan it whole for as long as nothing re-plans it (seen: with
    autovacuum off, a single publish's server CPU grew from 0.3 to 17 ms within a minute).
    The session settings are why such a connection must never go back to the pool.

    `text` uses `%(name)s` placeholders; `params` names them, in order, with their types. A
    server that forgot the statement (a connection pooler that changed the server connection
    under us) gets it prepared again.
    """

    name: str
    params: tuple[tuple[str, str], ...]
    text: str

    def execute(self, connection: Connection, values: dict[str, Any], *, fetch: bool = False,
                unflushed: bool = False) -> list[tuple[Any, ...]]:
        """Run on the connection's DBAPI connection (see `dbapi_cursor`). `unflushed`: in a
        transaction of its own that does not wait for its commit's flush (the connection
        must be in autocommit mode)."""
        prepared = connection.connection.info.setdefault("mq_prepared", set())
        call = (f"EXECUTE {self.name} "
                f"({', '.join(f'%({name})s' for name, _ in self.params)})")
        if unflushed:
            call = f"BEGIN; SET LOCAL synchronous_commit TO OFF; {call}; COMMIT"
        with dbapi_cursor(connection, call) as cursor:
            if self.name not in prepared:
                self._prepare(cursor)
                prepared.add(self.name)
            try:
                cursor.execute(call, values)
            except connection.dialect.loaded_dbapi.Error as exc:
                if getattr(exc, "pgcode", None) != _UNKNOWN_STATEMENT:
                    raise
                self._prepare(cursor)
                cursor.execute(call, values)
            return cursor.fetchall() if fetch else []

    def _prepare(self, cursor: Any) -> None:
        text = self.text
        for number, (name, _) in enumerate(self.params, start=1):
            text = text.replace(f"%({name})s", f"${number}")
        types = ", ".join(kind for _, kind in self.params)
        cursor.execute(_SESSION_SETTINGS)
        cursor.execute(f"PREPARE {self.name} ({types}) AS {text}")


#: Set for the session of a connection that runs prepared statements (see `PreparedStatement`).
_SESSION_SETTINGS = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off"
#: SQLSTATE invalid_sql_statement_name: EXECUTE of a statement this session never prepared.
_UNKNOWN_STATEMENT = "26000"


def compact_json(value: Any) -> str:
    """JSON text without spaces, non-ASCII kept as it is: how stored JSON is written."""
    return _COMPACT.encode(value)


#: One encoder for every call: `json.dumps` with arguments builds a new one each time, which
#: cost a third of the encoding of a small payload (measured).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _copy_value(value: Any, is_json: bool) -> str:
    """One value in COPY's text format (a JSON column's value as JSON text, `null` included)."""
    if is_json:
        text = compact_json(value)
    elif value is None:
        return "\\N"
    else:
        text = value.isoformat() if isinstance(value, datetime) else str(value)
    if not _NEEDS_ESCAPE.search(text):
        return text
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
