"""Whatever JSON a client sends as a function or database `handler_config`, checking it
ends in a validation error or a config, never in any other exception (no 500s)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError as InvalidFields
from sqlalchemy import create_engine, text

from handlers.registry import validate_handler_config
from mq.settings import Settings

SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.floats(
    allow_nan=False, allow_infinity=False)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10)
NAMES = st.sampled_from(["order_id", "customer", "colour", "x; DROP TABLE t", ""]) | st.text(
    max_size=10)
PATHS = st.sampled_from(["payload.id", "headers.h", "key", "payload", "body.x", ""]) | st.text(
    max_size=10)


def database_configs(target: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"type": st.just("database")}, optional={
        "target": st.sampled_from([target, "other"]) | JSON,
        "table": st.sampled_from(["orders", "nope", "main.orders"]) | JSON,
        "operation": st.sampled_from(["insert", "update", "upsert", "delete"]) | JSON,
        "mapping": st.dictionaries(NAMES, PATHS, max_size=3) | JSON,
        "criteria": st.dictionaries(NAMES, PATHS, max_size=2) | JSON,
        "conflict_columns": st.lists(NAMES, max_size=2) | JSON,
        "schema": JSON, "transform": JSON,
        "extra": JSON,
    })


FUNCTIONS = st.fixed_dictionaries({"type": st.just("function")}, optional={
    "function": st.sampled_from(["examples.orders:record_order", "examples.orders:nope",
                                 "examples:orders", "os:system", "examples.orders:ORDERS_TABLE",
                                 "examples.orders:record_order.__call__"]) | JSON,
    "schema": JSON, "transform": JSON,
})


def test_any_function_or_database_config_is_checked_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path}/fuzz.db"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer TEXT)"))
    engine.dispose()
    config = Settings(mq_function_modules=("examples",), mq_db_targets={"shop": url})

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=database_configs("shop") | FUNCTIONS)
    @example(raw={"type": "database", "target": "shop", "table": "orders", "operation": "upsert",
                  "mapping": {"order_id": "payload.id"}, "conflict_columns": ["order_id"]})
    def check(raw):
        try:
            stored = validate_handler_config(raw, config)
        except InvalidFields as exc:
            assert exc.messages
        else:
            assert stored["type"] == raw["type"]

    check()
