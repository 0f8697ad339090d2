"""The `database` handler: one row operation per message on a table of a named target.

`handler_config`: `{"type": "database", "target": "<name in MQ_DB_TARGETS>", "table": "orders",
"operation": "insert"|"update"|"upsert"|"delete", "mapping": {"column": "payload.field"},
"criteria": {"column": "payload.id"}, "conflict_columns": ["id"]}`. `insert` and `upsert`
need `mapping` (`upsert` also `conflict_columns`, a primary key or unique constraint of the
table), `update` needs `mapping` and `criteria`, `delete` needs `criteria`. A table may be
named `schema.table`.

Values come from dotted paths into `{payload, headers, key}` (`handlers.paths`). A mapped path
that the message lacks leaves its column out (its default on insert, unchanged on update); a
JSON `null` stores NULL; objects and arrays go to JSON columns as they are and to other
columns as JSON text. A criteria path the message lacks fails the delivery as permanent
rather than match rows by NULL.

Statements are SQLAlchemy Core on `Table`s reflected from the target: names are the
reflected ones and values are always bound parameters. Upserts are `INSERT … ON CONFLICT DO
UPDATE` (PostgreSQL, SQLite). A constraint violation or a value the column cannot hold is
permanent; a connection problem is retried. Each worker process keeps one pooled engine per
target, made on first use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, Column, MetaData, Table, and_, create_engine, delete, inspect
from sqlalchemy import insert as sql_insert
from sqlalchemy import update as sql_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchTableError,
    NotSupportedError,
    ProgrammingError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import NullPool

from handlers.base import Delivery, HandlerResult, PermanentFailure, RetryableFailure
from handlers.paths import MISSING, message_document, path_problem, resolve
from mq.settings import Settings
from mq.urls import with_installed_driver

OPERATIONS = ("insert", "update", "upsert", "delete")
NEEDS: dict[str, tuple[str, ...]] = {
    "insert": ("mapping",),
    "upsert": ("mapping", "conflict_columns"),
    "update": ("mapping", "criteria"),
    "delete": ("criteria",),
}
#: Dialect -> its INSERT with `ON CONFLICT` (`excluded`, `on_conflict_do_…`).
UPSERT_DIALECTS: dict[str, Callable[[Table], Any]] = {"postgresql": postgresql.insert,
                                                      "sqlite": sqlite.insert}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})
SERVICE_DATABASE = ("is the service's own database under the service's own user; tenants "
                    "may not write there (give the target a user of its own, or a database)")
CONNECT_TIMEOUT_S = 5

Problems = dict[str, Any]


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for a target; ImportError when the URL's driver is not installed."""
    url = with_installed_driver(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name().startswith("psycopg"):
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if not pooled:
        options["poolclass"] = NullPool
    return create_engine(url, **options)


def is_service_database(url: str, service_url: str) -> bool:
    """Whether a target reaches the service's own metadata database as the service's own user:
    tenants writing there could write to its tables (tenants, API keys). The same database
    under another user is allowed: that user's grants are the operator's decision."""
    try:
        target, service = make_url(url), make_url(service_url)
    except ArgumentError:
        return False
    backend = _backend(target)
    if backend != _backend(service):  # the service's is PostgreSQL
        return False
    return _server_identity(target) == _server_identity(service)


def _backend(url: URL) -> str:
    name = url.get_backend_name()
    return "postgresql" if name == "postgres" else name


def _server_identity(url: URL) -> tuple[str, int | None, str | None, str | None]:
    host = url.host or "localhost"
    return ("localhost" if host in LOCAL_HOSTS else host.lower(),
            url.port or DEFAULT_PORTS.get(_backend(url)), url.database, url.username)


def split_table(name: str) -> tuple[str | None, str]:
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else (None, name)


class Targets:
    """The engines of `MQ_DB_TARGETS` (made on first use) and their reflected tables."""

    def __init__(self, urls: dict[str, str], *, pooled: bool = True) -> None:
        self.urls = dict(urls)
        self.pooled = pooled
        self._engines: dict[str, Engine] = {}
        self._tables: dict[tuple[str, str], Table] = {}
        self._lock = threading.Lock()

    def engine(self, target: str) -> Engine:
        engine = self._engines.get(target)
        if engine is None:
            with self._lock:
                engine = self._engines.get(target)
                if engine is None:
                    engine = make_engine(self.urls[target], pooled=self.pooled)
                    self._engines[target] = engine
        return engine

    def table(self, target: str, name: str, *, refresh: bool = False) -> Table:
        key = (target, name)
        table = None if refresh else self._tables.get(key)
        if table is None:
            schema, table_name = split_table(name)
            table = Table(table_name, MetaData(), schema=schema,
                          autoload_with=self.engine(target))
            self._tables[key] = table
        return table

    def dispose(self) -> None:
        with self._lock:
            engines, self._engines = self._engines, {}
            self._tables.clear()
        for engine in engines.values():
            engine.dispose()


# ---------------------------------------------------------------- subscription-time checks

_INSPECTION: dict[str, Engine] = {}
_INSPECTION_LOCK = threading.Lock()


def _inspection_engine(url: str) -> Engine:
    """Unpooled engines for checks in the API process: no idle connections held there."""
    with _INSPECTION_LOCK:
        engine = _INSPECTION.get(url)
        if engine is None:
            engine = _INSPECTION[url] = make_engine(url, pooled=False)
        return engine


def config_problems(config: dict[str, Any], settings: Settings) -> Problems:
    """What is wrong with a database `handler_config` (empty if nothing), keyed by field;
    the table and columns are checked against the target's schema as it is now."""
    target = config.get("target")
    targets = settings.mq_db_targets
    if target not in targets:
        known = ", ".join(sorted(targets)) or "none configured"
        return {"target": [f"unknown target '{str(target)[:100]}' (known: {known})"]}
    if is_service_database(targets[target], settings.database_url):
        return {"target": [f"target '{target}' {SERVICE_DATABASE}"]}
    problems = _shape_problems(config)
    if problems:
        return problems
    try:
        engine = _inspection_engine(targets[target])
        with engine.connect() as connection:
            return _schema_problems(config, inspect(connection), engine.dialect.name)
    except SQLAlchemyError as exc:
        return {"target": [f"target '{target}' cannot be inspected: {type(exc).__name__}"]}
    except ImportError as exc:
        return {"target": [f"target '{target}' {missing_driver(exc)}"]}


def missing_driver(exc: ImportError) -> str:
    return (f"needs the database driver '{exc.name or exc}', which is not installed "
            "(give its URL a driver that is, e.g. postgresql+psycopg2://)")


def _shape_problems(config: dict[str, Any]) -> Problems:
    operation = str(config.get("operation"))
    needed = NEEDS.get(operation, ())
    problems: Problems = {}
    for name in ("mapping", "criteria", "conflict_columns"):
        if name in needed and not config.get(name):
            problems[name] = [f"'{operation}' needs {name}"]
        elif name not in needed and config.get(name):
            problems[name] = [f"'{operation}' does not use {name}"]
    for name in ("mapping", "criteria"):
        bad = {column: [problem] for column, path in (config.get(name) or {}).items()
               if (problem := path_problem(path))}
        if bad and name not in problems:
            problems[name] = bad
    return problems


def _schema_problems(config: dict[str, Any], inspector: Any, dialect: str) -> Problems:
    table = config["table"]
    schema, table_name = split_table(table)
    if schema is not None and schema not in inspector.get_schema_names():
        return {"table": [f"unknown schema '{schema}' in target '{config['target']}'"]}
    if table_name not in inspector.get_table_names(schema=schema):
        return {"table": [f"unknown table '{table}' in target '{config['target']}'"]}
    columns = {column["name"] for column in inspector.get_columns(table_name, schema=schema)}
    problems: Problems = {}
    for field in ("mapping", "criteria"):
        unknown = {name: [f"unknown column '{name}' in table '{table}'"]
                   for name in (config.get(field) or {}) if name not in columns}
        if unknown:
            problems[field] = unknown
    if config["operation"] == "upsert":
        problem = _conflict_problem(config, inspector, table_name, schema, columns, dialect)
        if problem:
            problems["conflict_columns"] = [problem]
    return problems


def _conflict_problem(config: dict[str, Any], inspector: Any, table: str, schema: str | None,
                      columns: set[str], dialect: str) -> str | None:
    if dialect not in UPSERT_DIALECTS:
        return f"upsert is supported on PostgreSQL and SQLite targets, not {dialect}"
    wanted = list(config["conflict_columns"])
    unknown = [name for name in wanted if name not in columns]
    if unknown:
        return f"unknown column '{unknown[0]}' in table '{config['table']}'"
    unmapped = [name for name in wanted if name not in config["mapping"]]
    if unmapped:
        return f"conflict column '{unmapped[0]}' must be in mapping"
    if set(wanted) not in _unique_sets(inspector, table, schema):
        return "conflict_columns must be the primary key or a unique constraint of the table"
    return None


def _unique_sets(inspector: Any, table: str, schema: str | None) -> list[set[str]]:
    sets = [set(inspector.get_pk_constraint(table, schema=schema)["constrained_columns"])]
    sets += [set(c["column_names"]) for c in inspector.get_unique_constraints(table, schema=schema)]
    sets += [set(i["column_names"]) for i in inspector.get_indexes(table, schema=schema)
             if i.get("unique")]
    return [found for found in sets if found]


# ---------------------------------------------------------------------------- the handler


class DatabaseHandler:
    def __init__(self, settings: Settings) -> None:
        self.targets = Targets(settings.mq_db_targets)
        self.refused = {name for name, url in settings.mq_db_targets.items()
                        if is_service_database(url, settings.database_url)}

    def deliver(self, config: dict[str, Any], delivery: Delivery) -> HandlerResult:
        target = str(config.get("target", ""))
        if target not in self.targets.urls:
            raise PermanentFailure(f"unknown database target '{target[:100]}'")
        if target in self.refused:
            raise PermanentFailure(f"target '{target}' {SERVICE_DATABASE}")
        operation = str(config.get("operation", ""))
        try:
            table = self._table(target, config)
            statement = _statement(operation, table, config, message_document(delivery),
                                   self.targets.engine(target).dialect.name)
            with self.targets.engine(target).begin() as connection:
                rows = connection.execute(statement).rowcount
        except (PermanentFailure, RetryableFailure):
            raise
        except SQLAlchemyError as exc:
            raise _failure(exc) from None
        except ImportError as exc:
            raise PermanentFailure(f"target '{target}' {missing_driver(exc)}") from None
        return HandlerResult(None, json.dumps({"operation": operation, "rows": rows}))

    def _table(self, target: str, config: dict[str, Any]) -> Table:
        """The reflected table, reflected again once if it lacks a configured column (the
        table may have gained it since this process first looked)."""
        name = str(config.get("table", ""))
        wanted = set(config.get("mapping") or {}) | set(config.get("criteria") or {})
        try:
            table = self.targets.table(target, name)
            if not wanted <= set(table.c.keys()):
                table = self.targets.table(target, name, refresh=True)
        except NoSuchTableError:
            raise PermanentFailure(f"table '{name}' does not exist in '{target}'") from None
        missing = sorted(wanted - set(table.c.keys()))
        if missing:
            raise PermanentFailure(f"table '{name}' has no column '{missing[0]}'")
        return table

    def close(self) -> None:
        self.targets.dispose()


def _statement(operation: str, table: Table, config: dict[str, Any],
               document: dict[str, Any], dialect: str) -> Any:
    values = _values(table, config.get("mapping") or {}, document)
    if operation == "insert":
        return sql_insert(table).values(values)
    if operation == "upsert":
        return _upsert(table, values, list(config.get("conflict_columns") or ()), dialect)
    where = and_(*(table.c[column] == value
                   for column, value in _criteria(config.get("criteria") or {}, document)))
    if operation == "update":
        if not values:
            raise PermanentFailure("the message has none of the mapped fields")
        return sql_update(table).where(where).values(values)
    if operation == "delete":
        return delete(table).where(where)
    raise PermanentFailure(f"unknown database operation '{operation[:50]}'")


def _upsert(table: Table, values: dict[str, Any], conflict: list[str], dialect: str) -> Any:
    dialect_insert = UPSERT_DIALECTS.get(dialect)
    if dialect_insert is None:
        raise PermanentFailure(f"upsert is not supported on {dialect}")
    statement = dialect_insert(table).values(values)
    index = [table.c[name] for name in conflict]
    updates = {name: statement.excluded[name] for name in values if name not in conflict}
    if not updates:
        return statement.on_conflict_do_nothing(index_elements=index)
    return statement.on_conflict_do_update(index_elements=index, set_=updates)


def _values(table: Table, mapping: dict[str, str], document: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for column, path in mapping.items():
        value = resolve(document, path)
        if value is not MISSING:
            values[column] = _bindable(table.c[column], value)
    return values


def _criteria(criteria: dict[str, str], document: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for column, path in criteria.items():
        value = resolve(document, path)
        if value is MISSING:
            raise PermanentFailure(f"the message has no '{path}' for criteria column '{column}'")
        pairs.append((column, value))
    return pairs


def _bindable(column: Column[Any], value: Any) -> Any:
    """Objects and arrays as JSON text, unless the column stores JSON itself."""
    if isinstance(value, dict | list) and not isinstance(column.type, JSON):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _failure(exc: SQLAlchemyError) -> PermanentFailure | RetryableFailure:
    detail = _reason(exc)
    if isinstance(exc, IntegrityError):
        return PermanentFailure(f"constraint violated: {detail}")
    if isinstance(exc, DataError | ProgrammingError | NotSupportedError):
        return PermanentFailure(f"the database refused the values: {detail}")
    if isinstance(exc, DBAPIError) or not isinstance(exc, StatementError):
        return RetryableFailure(f"database unavailable: {detail}")
    return PermanentFailure(f"the values cannot be bound: {detail}")


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line: never the statement or its parameters."""
    source = getattr(exc, "orig", None) or exc
    lines = str(source).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(source).__name__}: {text[:300]}"
