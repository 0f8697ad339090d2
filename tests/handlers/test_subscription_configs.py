"""Creating and updating subscriptions through the API: function and database handlers,
filters, schemas and transforms are checked when saved (422 with the field's messages),
never left to fail at delivery."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import TenantHandle, make_tenant

TABLE = f"api_orders_{uuid.uuid4().hex[:8]}"
CREATE = f"""CREATE TABLE {TABLE} (order_id VARCHAR(64) PRIMARY KEY,
             customer VARCHAR(200) NOT NULL, total NUMERIC(12, 2))"""


@pytest.fixture(scope="module")
def targets(target_database_url: str, tmp_path_factory) -> Iterator[dict[str, str]]:
    urls = {"pg": target_database_url,
            "lite": f"sqlite:///{tmp_path_factory.mktemp('targets')}/orders.db"}
    engines = [create_engine(url) for url in urls.values()]
    for engine in engines:
        with engine.begin() as connection:
            connection.execute(text(CREATE))
    # The same database written as users write it: no driver named, Heroku's scheme.
    bare = make_url(target_database_url).set(drivername="postgresql")
    yield {**urls, "bare": bare.render_as_string(hide_password=False),
           "heroku": bare.set(drivername="postgres").render_as_string(hide_password=False),
           "mysql": "mysql://root@127.0.0.1:3306/shop"}  # its driver is not installed
    for engine in engines:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        engine.dispose()


@pytest.fixture(scope="module")
def handler_app(settings, targets):
    from api import create_app

    return create_app(dataclasses.replace(
        settings, mq_function_modules=("tests.handlers.sample_functions", "examples"),
        mq_db_targets=targets))


@pytest.fixture
def owner(handler_app) -> TenantHandle:
    tenant = make_tenant(handler_app.test_client())
    tenant.create_queue("orders")
    return tenant


def create(owner: TenantHandle, handler_config: dict[str, Any], **fields: Any) -> Any:
    return owner.admin.post("/subscriptions", {
        "topic": "orders", "consumer_group": f"g-{uuid.uuid4().hex[:8]}",
        "handler_config": handler_config, **fields})


def details(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    return response.json["error"]["details"]


def database(target: str = "pg", **fields: Any) -> dict[str, Any]:
    return {"type": "database", "target": target, "table": TABLE, "operation": "insert",
            "mapping": {"order_id": "payload.id", "customer": "payload.customer"}, **fields}


HTTP = {"type": "http", "url": "https://hooks.example.com/orders"}


def test_a_function_subscription_is_created(owner):
    response = create(owner, {"type": "function", "function": "examples.orders:record_order"})
    assert response.status_code == 201, response.json
    assert response.json["handler_config"] == {"type": "function",
                                               "function": "examples.orders:record_order"}
    assert response.json["subscription_type"] == "redis_consumer"


@pytest.mark.parametrize(("function", "fragment"), [
    ("os:system", "not in the allowed function modules"),
    ("examples.orders:no_such_function", "has no attribute"),
    ("tests.handlers.sample_functions:NOT_CALLABLE", "is not callable"),
    ("tests.handlers.sample_functions:dumps", "comes from module 'json'"),
    ("examples.orders", "expected 'package.module:callable'"),
])
def test_an_unusable_function_is_refused(owner, function, fragment):
    found = details(create(owner, {"type": "function", "function": function}))
    assert fragment in found["handler_config"]["function"][0]


def test_a_function_config_needs_its_field_and_nothing_unknown(owner):
    assert "function" in details(create(owner, {"type": "function"}))["handler_config"]
    found = details(create(owner, {"type": "function", "function": "examples.orders:record_order",
                                   "url": "https://x.example.com"}))
    assert "url" in found["handler_config"]


@pytest.mark.parametrize("target", ["pg", "lite", "bare", "heroku"])
def test_a_database_subscription_is_created(owner, target):
    response = create(owner, database(target))
    assert response.status_code == 201, response.json
    assert response.json["handler_config"]["table"] == TABLE


def test_a_database_upsert_subscription_is_created(owner):
    response = create(owner, database(operation="upsert", conflict_columns=["order_id"]))
    assert response.status_code == 201, response.json


@pytest.mark.parametrize(("change", "field", "fragment"), [
    ({"target": "warehouse"}, "target",
     "unknown target 'warehouse' (known: bare, heroku, lite, mysql, pg)"),
    ({"target": "mysql"}, "target",
     "target 'mysql' needs the database driver 'MySQLdb', which is not installed"),
    ({"table": "no_such_table"}, "table", "unknown table 'no_such_table'"),
    ({"table": f"{TABLE}; DROP TABLE {TABLE}"}, "table", "unknown table"),
    ({"operation": "merge"}, "operation", "Must be one of"),
    ({"mapping": {"order_id": "payload.id", "colour": "payload.c"}}, "mapping",
     "unknown column 'colour'"),
    ({"mapping": {"order_id = 1; --": "payload.id"}}, "mapping", "unknown column"),
    ({"operation": "update"}, "criteria", "'update' needs criteria"),
    ({"operation": "upsert"}, "conflict_columns", "'upsert' needs conflict_columns"),
    ({"operation": "upsert", "conflict_columns": ["customer"]}, "conflict_columns",
     "primary key or a unique constraint"),
])
def test_a_wrong_database_config_is_refused_with_what_is_wrong(owner, change, field, fragment):
    found = details(create(owner, database(**change)))["handler_config"]
    assert fragment in str(found[field]), found


def test_a_valid_filter_is_stored_and_answered(owner):
    policy = {"headers.type": ["order.created"], "payload.amount": [{"numeric": [">", 100]}],
              "payload.region": [{"prefix": "eu-"}], "payload.coupon": [{"exists": False}],
              "payload.status": [{"anything-but": ["test"]}]}
    response = create(owner, HTTP, message_filter=policy)
    assert response.status_code == 201, response.json
    assert response.json["message_filter"] == policy
    read = owner.admin.get(f"/subscriptions/{response.json['id']}")
    assert read.json["message_filter"] == policy


@pytest.mark.parametrize(("policy", "path", "fragment"), [
    ({"payload.x": [{"suffix": "a"}]}, "payload.x", "unknown operator"),
    ({"amount": [1]}, "amount", "starts with 'payload'"),
    ({"payload.x": [{"numeric": [">", 10, "<", 1]}]}, "payload.x", "range is empty"),
    ({"payload.x": []}, "payload.x", "at least one condition"),
])
def test_an_invalid_filter_is_refused(owner, policy, path, fragment):
    found = details(create(owner, HTTP, message_filter=policy))
    assert fragment in found["message_filter"][path][0]


def test_a_filter_that_is_not_an_object_is_refused(owner):
    assert "message_filter" in details(create(owner, HTTP, message_filter=["payload.x"]))


def test_a_filter_is_checked_on_update_too(owner):
    subscription = create(owner, HTTP).json
    path = f"/subscriptions/{subscription['id']}"
    found = details(owner.admin.put(path, {"message_filter": {"payload.x": [{"bad": 1}]}}))
    assert "unknown operator" in found["message_filter"]["payload.x"][0]
    good = {"payload.x": ["ok"]}
    response = owner.admin.put(path, {"message_filter": good})
    assert response.status_code == 200 and response.json["message_filter"] == good
    cleared = owner.admin.put(path, {"message_filter": None})
    assert cleared.status_code == 200 and cleared.json["message_filter"] is None


@pytest.mark.parametrize(("extra", "field", "fragment"), [
    ({"schema": {"type": "nonsense"}}, "schema", "not a JSON Schema"),
    ({"schema": {"$ref": "https://schemas.example.com/o.json"}}, "schema",
     "only references inside"),
    ({"schema": "object"}, "schema", "Not a valid mapping"),
    ({"transform": "payload.["}, "transform", "not a JMESPath expression"),
    ({"transform": ""}, "transform", "non-empty"),
])
@pytest.mark.parametrize("base", ["http", "function", "database"])
def test_an_unusable_schema_or_transform_is_refused(owner, base, extra, field, fragment):
    config = {"http": HTTP, "database": database(),
              "function": {"type": "function", "function": "examples.orders:record_order"}}[base]
    found = details(create(owner, {**config, **extra}))["handler_config"]
    assert fragment in found[field][0], found


def test_a_valid_schema_and_transform_are_stored(owner):
    config = {"type": "function", "function": "examples.orders:record_order",
              "schema": {"type": "object", "required": ["order_id"]},
              "transform": "{order_id: payload.id, source: headers.source}"}
    response = create(owner, config)
    assert response.status_code == 201, response.json
    assert response.json["handler_config"] == config


def test_an_update_to_a_forbidden_function_is_refused(owner):
    subscription = create(owner, {"type": "function",
                                  "function": "examples.orders:record_order"}).json
    found = details(owner.admin.put(f"/subscriptions/{subscription['id']}", {
        "handler_config": {"type": "function", "function": "subprocess:run"}}))
    assert "not in the allowed" in found["handler_config"]["function"][0]
