"""Function and database handlers, filters, transforms and schemas through the real worker
and scheduler processes."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.delivery.conftest import ROOT
from tests.processes import wait_until

TABLE = f"e2e_orders_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def settings(settings, target_database_url):
    """Workers and API of this module allow the sample functions and an `orders` target."""
    return dataclasses.replace(
        settings, mq_function_modules=("examples", "tests.handlers.sample_functions"),
        mq_db_targets={"orders": target_database_url})


@pytest.fixture
def processes(shared_processes):
    """The module's tests share their worker and scheduler (`SharedProcesses`): none kills,
    stops or reconfigures them."""
    return shared_processes


@pytest.fixture(autouse=True)
def importable_tests(processes):
    """Worker processes import the test suite's sample functions from the source tree."""
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    processes.env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)


@pytest.fixture(scope="module")
def app(settings):
    from api import create_app

    return create_app(settings)


@pytest.fixture
def orders_table(target_database_url):
    engine = create_engine(target_database_url)
    with engine.begin() as connection:
        connection.execute(text(f"""CREATE TABLE {TABLE} (order_id VARCHAR(64) PRIMARY KEY,
            customer VARCHAR(200) NOT NULL, total NUMERIC(12, 2), source VARCHAR(50))"""))
    yield engine
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
    engine.dispose()


def _subscribe(tenant, topic, group, handler_config, **fields):
    response = tenant.admin.post("/subscriptions", {
        "topic": topic, "consumer_group": group, "handler_config": handler_config,
        "retry_delay_ms": 100, "max_retry_delay_ms": 1000, **fields})
    assert response.status_code == 201, response.json
    return response.json


def _stats(tenant, sub_id):
    return tenant.admin.get(f"/subscriptions/{sub_id}").json["stats"]


@pytest.mark.single_redis
def test_a_function_and_a_database_subscription_both_receive_the_order(
        tenant, processes, orders_table, tmp_path: Path):
    tenant.create_queue("orders")
    out = tmp_path / "calls.jsonl"
    function = _subscribe(tenant, "orders", "audit", {
        "type": "function", "function": "tests.handlers.sample_functions:append_line"})
    database = _subscribe(tenant, "orders", "store", {
        "type": "database", "target": "orders", "table": TABLE, "operation": "upsert",
        "conflict_columns": ["order_id"],
        "mapping": {"order_id": "payload.order_id", "customer": "payload.customer",
                    "total": "payload.total", "source": "headers.source"}})
    processes.scheduler()
    processes.worker()
    order = {"order_id": "o-1'; DROP TABLE x; --", "customer": "Ada", "total": 42.5}
    headers = {"source": "shop", "x-out": str(out)}
    response = tenant.admin.post("/publish", {"topic": "orders", "payload": order,
                                              "headers": headers})
    assert response.status_code == 201, response.json

    line = wait_until(lambda: out.exists() and out.read_text().strip())
    assert json.loads(line) == {"payload": order, "headers": headers}

    def row():
        with orders_table.connect() as connection:
            return connection.execute(text(f"SELECT * FROM {TABLE}")).mappings().all()

    [stored] = wait_until(row)
    assert (stored["order_id"], stored["customer"], float(stored["total"]), stored["source"]) \
        == (order["order_id"], "Ada", 42.5, "shop")
    wait_until(lambda: _stats(tenant, function["id"])["delivered_total"] == 1)
    wait_until(lambda: _stats(tenant, database["id"])["delivered_total"] == 1)


@pytest.mark.single_redis
def test_a_filtered_subscription_receives_only_matching_messages_transformed(
        tenant, webhook, processes):
    tenant.create_queue("orders")
    everything = _subscribe(tenant, "orders", "all", {"type": "http",
                                                      "url": webhook.url("/all")})
    big_eu = _subscribe(tenant, "orders", "big-eu", {
        "type": "http", "url": webhook.url("/big-eu"),
        "transform": "{id: payload.id, region: payload.region, kind: headers.type}"},
        message_filter={"payload.amount": [{"numeric": [">", 100]}],
                        "payload.region": [{"prefix": "eu-"}],
                        "headers.type": ["order.created"]})
    processes.scheduler()
    processes.worker()
    messages = [
        ({"id": 1, "amount": 500, "region": "eu-west"}, "order.created"),  # matches
        ({"id": 2, "amount": 50, "region": "eu-west"}, "order.created"),
        ({"id": 3, "amount": 500, "region": "us-east"}, "order.created"),
        ({"id": 4, "amount": 500, "region": "eu-north"}, "order.updated"),
        ({"id": 5, "amount": 101, "region": "eu-"}, "order.created"),  # matches
    ]
    for payload, kind in messages:
        response = tenant.admin.post("/publish", {"topic": "orders", "payload": payload,
                                                  "headers": {"type": kind}})
        assert response.status_code == 201, response.json

    webhook.wait_for("/all", 5)
    received = webhook.settle("/big-eu", quiet_s=1.0)
    assert sorted((r.json for r in received), key=lambda body: body["id"]) == [
        {"id": 1, "region": "eu-west", "kind": "order.created"},
        {"id": 5, "region": "eu-", "kind": "order.created"}]
    stats = wait_until(lambda: (s := _stats(tenant, big_eu["id"]))["filtered_total"] == 3 and s)
    assert stats["delivered_total"] == 2
    assert _stats(tenant, everything["id"])["filtered_total"] == 0
    records = wait_until(lambda: len(items := tenant.admin.get(
        f"/subscriptions/{big_eu['id']}/deliveries").json["items"]) == 5 and items)
    assert sorted(r["status"] for r in records) == ["filtered"] * 3 + ["success"] * 2


@pytest.mark.single_redis
def test_a_schema_violation_is_dead_lettered_after_one_attempt(tenant, webhook, processes):
    tenant.create_queue("orders")
    sub = _subscribe(tenant, "orders", "strict", {
        "type": "http", "url": webhook.url("/strict"),
        "schema": {"type": "object", "required": ["order_id"],
                   "properties": {"order_id": {"type": "string"}}}},
        max_retry_attempts=3)
    processes.scheduler()
    processes.worker()
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"order_id": 7}})
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"order_id": "o-8"}})

    assert [r.json for r in webhook.wait_for("/strict", 1)] == [{"order_id": "o-8"}]
    letters = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    [letter] = letters
    assert letter["failure_reason"] == "schema"
    assert letter["retry_count"] == 0
    assert letter["payload"] == {"order_id": 7}
    assert "does not match the schema" in letter["error_message"]
    stats = wait_until(lambda: (s := _stats(tenant, sub["id"]))["dead_lettered_total"] == 1
                       and s)
    assert stats["failed_total"] == 1 and stats["delivered_total"] == 1
    assert len(webhook.settle("/strict", quiet_s=0.8)) == 1


@pytest.mark.single_redis
def test_a_failing_function_is_retried_then_dead_lettered(tenant, processes):
    tenant.create_queue("orders")
    sub = _subscribe(tenant, "orders", "boom", {
        "type": "function", "function": "tests.handlers.sample_functions:explode"},
        max_retry_attempts=1)
    processes.scheduler()
    processes.worker()
    tenant.admin.post("/publish", {"topic": "orders", "payload": {"a": 1}})

    [letter] = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    assert letter["failure_reason"] == "error" and letter["retry_count"] == 1
    assert "RuntimeError: the function failed" in letter["error_message"]
