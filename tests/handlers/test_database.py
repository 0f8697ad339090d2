"""The database handler by direct call, on PostgreSQL (the run's test database) and on a
SQLite file: every operation, rows: 0, bound values, names checked against the schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from handlers.base import PermanentFailure, RetryableFailure
from handlers.database import DatabaseHandler, config_problems, is_service_database
from mq.settings import Settings
from tests.handlers.helpers import make_delivery

INJECTION = "x'); DROP TABLE {table}; --"


@dataclass
class Target:
    settings: Settings
    engine: Engine
    table: str
    dialect: str

    def config(self, operation: str, **fields: Any) -> dict[str, Any]:
        return {"type": "database", "target": "main", "table": self.table,
                "operation": operation, **fields}

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            result = connection.execute(text(f'SELECT * FROM "{self.table}" ORDER BY order_id'))
            return [dict(row._mapping) for row in result]


def _create_table(engine: Engine, table: str, dialect: str) -> None:
    json_type = "JSONB" if dialect == "postgresql" else "JSON"
    with engine.begin() as connection:
        connection.execute(text(f"""
            CREATE TABLE "{table}" (
                order_id VARCHAR(64) PRIMARY KEY,
                customer VARCHAR(200) NOT NULL,
                total NUMERIC(12, 2),
                quantity INTEGER DEFAULT 1,
                region VARCHAR(32) DEFAULT 'none',
                note TEXT,
                details {json_type},
                external_ref VARCHAR(64) UNIQUE
            )"""))


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request, tmp_path) -> Iterator[Target]:
    if request.param == "postgresql":
        url = request.getfixturevalue("target_database_url")
    else:
        url = f"sqlite:///{tmp_path}/target.db"
    engine = create_engine(url)
    table = f"h_orders_{uuid.uuid4().hex[:8]}"
    _create_table(engine, table, request.param)
    yield Target(Settings(mq_db_targets={"main": url}), engine, table, request.param)
    with engine.begin() as connection:
        connection.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


@pytest.fixture
def handler(target: Target) -> Iterator[DatabaseHandler]:
    handler = DatabaseHandler(target.settings)
    yield handler
    handler.close()


MAPPING = {"order_id": "payload.id", "customer": "payload.customer.name",
           "total": "payload.total", "note": "headers.note", "region": "key"}


def deliver(handler: DatabaseHandler, config: dict[str, Any], payload: Any,
            headers: dict[str, str] | None = None, key: str | None = None) -> dict[str, Any]:
    result = handler.deliver(config, make_delivery(payload, headers=headers, key=key))
    return json.loads(result.excerpt)


def test_insert_maps_payload_headers_and_key(target, handler):
    outcome = deliver(handler, target.config("insert", mapping=MAPPING),
                      {"id": "o-1", "customer": {"name": "Ada"}, "total": 12.5},
                      {"note": "first"}, "eu")
    assert outcome == {"operation": "insert", "rows": 1}
    [row] = target.rows()
    assert (row["order_id"], row["customer"], float(row["total"]), row["note"], row["region"]) \
        == ("o-1", "Ada", 12.5, "first", "eu")


def test_missing_fields_take_the_column_default_and_null_stores_null(target, handler):
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-2", "customer": {"name": "Bo"}, "total": None})
    [row] = target.rows()
    assert row["total"] is None and row["region"] == "none" and row["quantity"] == 1


def test_objects_go_to_json_columns_as_json_and_to_text_columns_as_json_text(target, handler):
    mapping = {"order_id": "payload.id", "customer": "payload.customer.name",
               "details": "payload.customer", "note": "payload.lines"}
    payload = {"id": "o-3", "customer": {"name": "Cy", "tier": "gold"}, "lines": [1, 2]}
    deliver(handler, target.config("insert", mapping=mapping), payload)
    [row] = target.rows()
    details = row["details"] if isinstance(row["details"], dict) else json.loads(row["details"])
    assert details == {"name": "Cy", "tier": "gold"}
    assert json.loads(row["note"]) == [1, 2]


def test_sql_in_values_is_stored_verbatim(target, handler):
    hostile = INJECTION.format(table=target.table)
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-4'--", "customer": {"name": hostile}}, {"note": "'; DELETE FROM x; --"})
    [row] = target.rows()
    assert row["order_id"] == "o-4'--" and row["customer"] == hostile
    assert row["note"] == "'; DELETE FROM x; --"
    assert target.table in inspect(target.engine).get_table_names()


def test_update_by_criteria_and_rows_zero_when_nothing_matches(target, handler):
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-5", "customer": {"name": "Di"}, "total": 1})
    update = target.config("update", mapping={"total": "payload.total", "note": "payload.note"},
                           criteria={"order_id": "payload.id"})
    assert deliver(handler, update, {"id": "o-5", "total": 99, "note": "paid"}) == \
        {"operation": "update", "rows": 1}
    [row] = target.rows()
    assert float(row["total"]) == 99 and row["note"] == "paid" and row["customer"] == "Di"
    assert deliver(handler, update, {"id": "nope", "total": 1}) == \
        {"operation": "update", "rows": 0}
    assert deliver(handler, update, {"id": "o-5' OR '1'='1", "total": 1})["rows"] == 0


def test_update_leaves_unmentioned_columns_alone(target, handler):
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-6", "customer": {"name": "Ed"}, "total": 5})
    update = target.config("update", mapping={"total": "payload.total", "note": "payload.note"},
                           criteria={"order_id": "payload.id"})
    deliver(handler, update, {"id": "o-6", "note": "only the note"})
    [row] = target.rows()
    assert float(row["total"]) == 5 and row["note"] == "only the note"


def test_upsert_inserts_then_updates(target, handler):
    upsert = target.config("upsert", mapping=MAPPING, conflict_columns=["order_id"])
    assert deliver(handler, upsert, {"id": "o-7", "customer": {"name": "Fa"}, "total": 1}) == \
        {"operation": "upsert", "rows": 1}
    deliver(handler, upsert, {"id": "o-7", "customer": {"name": "Fa B."}, "total": 2})
    [row] = target.rows()
    assert row["customer"] == "Fa B." and float(row["total"]) == 2


def test_upsert_on_a_unique_column(target, handler):
    mapping = {"order_id": "payload.id", "external_ref": "payload.ref",
               "customer": "payload.name"}
    upsert = target.config("upsert", mapping=mapping, conflict_columns=["external_ref"])
    deliver(handler, upsert, {"id": "o-8", "ref": "R1", "name": "Gu"})
    deliver(handler, upsert, {"id": "o-8", "ref": "R1", "name": "Gus"})
    assert [(r["external_ref"], r["customer"]) for r in target.rows()] == [("R1", "Gus")]


def test_delete_and_rows_zero(target, handler):
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-10", "customer": {"name": "Io"}})
    delete = target.config("delete", criteria={"order_id": "payload.id"})
    assert deliver(handler, delete, {"id": "o-10"}) == {"operation": "delete", "rows": 1}
    assert target.rows() == []
    assert deliver(handler, delete, {"id": "o-10"}) == {"operation": "delete", "rows": 0}


def test_a_criteria_field_missing_from_the_message_is_permanent(target, handler):
    deliver(handler, target.config("insert", mapping=MAPPING),
            {"id": "o-11", "customer": {"name": "Jo"}})
    delete = target.config("delete", criteria={"order_id": "payload.id"})
    with pytest.raises(PermanentFailure, match=r"no 'payload\.id'"):
        deliver(handler, delete, {"other": 1})
    assert len(target.rows()) == 1


def test_constraint_violations_are_permanent(target, handler):
    insert = target.config("insert", mapping=MAPPING)
    deliver(handler, insert, {"id": "o-12", "customer": {"name": "Ka"}})
    with pytest.raises(PermanentFailure, match="constraint violated"):
        deliver(handler, insert, {"id": "o-12", "customer": {"name": "Ka again"}})
    with pytest.raises(PermanentFailure, match="constraint violated"):
        deliver(handler, insert, {"id": "o-13"})  # customer is NOT NULL
    assert [row["customer"] for row in target.rows()] == ["Ka"]


@pytest.mark.parametrize("target", ["postgresql"], indirect=True)  # SQLite takes any value
def test_a_value_the_column_cannot_hold_is_permanent_on_postgresql(target, handler):
    with pytest.raises(PermanentFailure, match="refused the values"):
        deliver(handler, target.config("insert", mapping=MAPPING),
                {"id": "o-14", "customer": {"name": "Li"}, "total": "not a number"})


def test_a_column_added_later_is_found(target, handler):
    insert = target.config("insert", mapping=MAPPING)
    deliver(handler, insert, {"id": "o-15", "customer": {"name": "Mo"}})
    with target.engine.begin() as connection:
        connection.execute(text(f'ALTER TABLE "{target.table}" ADD COLUMN channel VARCHAR(20)'))
    deliver(handler, target.config("insert", mapping={**MAPPING, "channel": "payload.channel"}),
            {"id": "o-16", "customer": {"name": "Ny"}, "channel": "web"})
    assert [row["channel"] for row in target.rows()] == [None, "web"]


def test_an_unreachable_target_is_retryable():
    handler = DatabaseHandler(Settings(mq_db_targets={
        "main": "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"}))
    config = {"type": "database", "target": "main", "table": "orders", "operation": "insert",
              "mapping": {"order_id": "payload.id"}}
    with pytest.raises(RetryableFailure, match="database unavailable"):
        handler.deliver(config, make_delivery({"id": "o"}))
    handler.close()


def test_an_unknown_target_at_delivery_is_permanent(handler, target):
    with pytest.raises(PermanentFailure, match="unknown database target"):
        handler.deliver({**target.config("insert", mapping=MAPPING), "target": "gone"},
                        make_delivery({}))


# ------------------------------------------------------------- subscription-time checks


def test_a_valid_config_has_no_problems(target):
    for config in (
        target.config("insert", mapping=MAPPING),
        target.config("upsert", mapping=MAPPING, conflict_columns=["order_id"]),
        target.config("update", mapping={"note": "payload.n"}, criteria={"order_id": "key"}),
        target.config("delete", criteria={"order_id": "payload.id", "region": "headers.r"}),
    ):
        assert config_problems(config, target.settings) == {}, config


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"target": "elsewhere"}, "target", "unknown target 'elsewhere' (known: main)"),
    ({"table": "no_such_table"}, "table", "unknown table 'no_such_table'"),
    ({"table": "orders; DROP TABLE orders"}, "table", "unknown table"),
    ({"table": 'x" ; DELETE FROM "y'}, "table", "unknown table"),
    ({"table": "nope.orders"}, "table", "unknown schema 'nope'"),
    ({"mapping": {"order_id": "payload.id", "colour": "payload.c"}}, "mapping", "unknown column"),
    ({"mapping": {"order_id); DROP TABLE x; --": "payload.id"}}, "mapping", "unknown column"),
    ({"mapping": {"order_id": "body.id"}}, "mapping", "starts with 'payload'"),
    ({"mapping": {}}, "mapping", "'insert' needs mapping"),
    ({"criteria": {"order_id": "payload.id"}}, "criteria", "'insert' does not use criteria"),
])
def test_insert_config_problems(target, change, field, fragment):
    problems = config_problems({**target.config("insert", mapping=MAPPING), **change},
                               target.settings)
    assert fragment in json.dumps(problems[field])


@pytest.mark.parametrize(("operation", "fields", "field", "fragment"), [
    ("update", {"mapping": MAPPING}, "criteria", "'update' needs criteria"),
    ("update", {"criteria": {"order_id": "key"}}, "mapping", "'update' needs mapping"),
    ("update", {"mapping": MAPPING, "criteria": {"1=1 OR order_id": "key"}}, "criteria",
     "unknown column"),
    ("delete", {}, "criteria", "'delete' needs criteria"),
    ("upsert", {"mapping": MAPPING}, "conflict_columns", "'upsert' needs conflict_columns"),
    ("upsert", {"mapping": MAPPING, "conflict_columns": ["customer"]}, "conflict_columns",
     "primary key or a unique constraint"),
    ("upsert", {"mapping": MAPPING, "conflict_columns": ["external_ref"]}, "conflict_columns",
     "must be in mapping"),
    ("upsert", {"mapping": MAPPING, "conflict_columns": ["nope"]}, "conflict_columns",
     "unknown column 'nope'"),
])
def test_operation_config_problems(target, operation, fields, field, fragment):
    problems = config_problems(target.config(operation, **fields), target.settings)
    assert fragment in json.dumps(problems[field])


def test_a_target_whose_driver_is_missing_fails_its_deliveries_for_good():
    handler = DatabaseHandler(Settings(mq_db_targets={"shop": "mysql://root@127.0.0.1/shop"}))
    config = {"type": "database", "target": "shop", "table": "orders", "operation": "insert",
              "mapping": {"id": "payload.id"}}
    with pytest.raises(PermanentFailure, match="needs the database driver 'MySQLdb'"):
        handler.deliver(config, make_delivery({"id": 1}))


def test_an_unreachable_target_cannot_be_inspected():
    settings = Settings(mq_db_targets={"main": "postgresql+psycopg2://postgres@127.0.0.1:1/x"})
    problems = config_problems({"type": "database", "target": "main", "table": "t",
                                "operation": "delete", "criteria": {"id": "key"}}, settings)
    assert "cannot be inspected" in problems["target"][0]


@pytest.mark.parametrize(("target", "service", "same"), [
    ("postgresql+psycopg2://mq@db:5432/mq", "postgresql+psycopg2://mq@db:5432/mq", True),
    ("postgres://mq:pw@db/mq", "postgresql+psycopg2://mq@db:5432/mq", True),
    ("postgresql://mq@127.0.0.1/mq", "postgresql+psycopg2://mq@localhost:5432/mq", True),
    ("postgresql://writer@db/mq", "postgresql://mq@db/mq", False),  # its own user and grants
    ("postgresql://mq@db/shop", "postgresql://mq@db/mq", False),
    ("postgresql://mq@other/mq", "postgresql://mq@db/mq", False),
    ("sqlite:///mq.db", "postgresql://mq@db/mq", False),
    ("not a url", "postgresql://mq@db/mq", False),
])
def test_the_service_database_is_recognised(target, service, same):
    assert is_service_database(target, service) is same


def test_a_target_that_is_the_service_database_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/mq.db"
    settings = Settings(database_url=url, mq_db_targets={"meta": url})
    config = {"type": "database", "target": "meta", "table": "api_keys", "operation": "insert",
              "mapping": {"id": "payload.id"}}
    assert "service's own database" in config_problems(config, settings)["target"][0]
    handler = DatabaseHandler(settings)
    try:
        with pytest.raises(PermanentFailure, match="service's own database"):
            handler.deliver(config, make_delivery({"id": "k-1"}))
    finally:
        handler.close()
