"""Queues: defaults, validation, pagination, stats from Redis, update rules, delete, purge."""

from __future__ import annotations

import base64
import json

import pytest

from broker.keys import group_name
from models import Subscription
from tests.api.conftest import assert_error

MIB = 1024 * 1024

DEFAULTS = {
    "description": "", "display_name": "Orders", "topic_type": "redis_stream",
    "partition_count": 1, "replication_factor": 1, "retention_ms": 604_800_000,
    "max_message_bytes": 1_048_576, "message_format": "json", "schema_subject": None,
    "schema_definition": None, "compression_type": "none", "encryption": "none",
    "is_public": False, "allowed_producers": [], "allowed_consumers": [], "status": "active",
}
TOPIC_FIELDS = {"id", "name", *DEFAULTS, "created_at", "updated_at"}
DEEP_SCHEMA: dict = {}
for _ in range(250):  # within the body nesting limit, beyond what the checker can walk
    DEEP_SCHEMA = {"not": DEEP_SCHEMA}


def test_create_answers_the_contract_defaults(tenant):
    response = tenant.admin.post("/queues", {"name": "orders"})
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == TOPIC_FIELDS
    assert body["name"] == "orders"
    assert {k: body[k] for k in DEFAULTS} == DEFAULTS
    assert isinstance(body["id"], str) and body["id"]
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    fetched = tenant.admin.get("/queues/orders").json
    assert {k: fetched[k] for k in TOPIC_FIELDS} == body


def test_display_name_defaults_to_the_capitalised_name(tenant):
    assert tenant.create_queue("orders.v2-EU")["display_name"] == "Orders.v2-EU"
    assert tenant.create_queue("_x")["display_name"] == "_x"
    assert tenant.create_queue("none", display_name=None)["display_name"] is None
    assert tenant.create_queue("given", display_name="Given One")["display_name"] == "Given One"
    assert tenant.admin.put("/queues/given", {"description": "d"}).json["display_name"] == \
        "Given One"


def test_create_with_every_field_set(tenant):
    fields = {
        "name": "Full.Name_1-x", "display_name": "Full", "description": "all of it",
        "topic_type": "redis_stream", "partition_count": 64, "replication_factor": 3,
        "retention_ms": 60_000, "max_message_bytes": 10 * MIB, "message_format": "msgpack",
        "schema_subject": "orders-value", "schema_definition": {"type": "object"},
        "compression_type": "zstd", "encryption": "none", "is_public": True,
        "allowed_producers": ["svc-a"], "allowed_consumers": ["svc-b", "svc-c"],
        "status": "paused",
    }
    # a topic may only name a subject registered in the tenant's schema registry
    tenant.admin.post("/schemas", {"subject": "orders-value", "format": "json",
                                   "definition": {"type": "object"}})
    response = tenant.admin.post("/queues", fields)
    assert response.status_code == 201, response.json
    assert {k: response.json[k] for k in fields} == fields


@pytest.mark.parametrize(("field", "value"), [
    ("name", ""), ("name", "a" * 201), ("name", "a b"), ("name", "a/b"), ("name", "ä"),
    ("name", "a:b"), ("name", None), ("name", 5), ("name", ["a"]),
    ("partition_count", 0), ("partition_count", 65), ("partition_count", -1),
    ("partition_count", "2"), ("partition_count", 2.5), ("partition_count", 2.0),
    ("partition_count", True), ("partition_count", None), ("partition_count", 10**30),
    ("retention_ms", 59_999), ("retention_ms", 31_536_000_001), ("retention_ms", "60000"),
    ("retention_ms", 1e10), ("max_message_bytes", 0), ("max_message_bytes", 10 * MIB + 1),
    ("max_message_bytes", False), ("replication_factor", 0), ("replication_factor", "1"),
    ("topic_type", "rabbitmq"), ("topic_type", ""), ("topic_type", None),
    ("topic_type", "REDIS_STREAM"), ("message_format", "xml"), ("message_format", 1),
    ("compression_type", "lz4"), ("encryption", "aes"), ("status", "deleted"),
    ("status", "ACTIVE"), ("is_public", "maybe"), ("is_public", None), ("is_public", [True]),
    ("is_public", "true"), ("is_public", 1), ("is_public", "yes"), ("is_public", 0),
    ("allowed_producers", "svc"), ("allowed_producers", [1]), ("allowed_producers", [""]),
    ("allowed_consumers", {"a": 1}), ("allowed_consumers", None), ("description", None),
    ("description", 5), ("display_name", 5), ("display_name", "x" * 201),
    ("schema_definition", "not a schema"), ("schema_definition", [1]),
    ("schema_definition", {"type": 5}), ("schema_definition", {"$schema": {"a": 1}}),
    ("schema_definition", {"$schema": ["x"], "type": "object"}),
    ("schema_definition", {"pattern": "["}), ("schema_definition", DEEP_SCHEMA),
    ("schema_definition", {"$ref": "https://schemas.example.com/order.json"}),
    ("schema_subject", ""), ("schema_subject", 5),
    ("unknown_field", 1),
])
def test_invalid_fields_are_422_with_details_per_field(tenant, field, value):
    body = {"name": "bounds", field: value}
    response = tenant.admin.post("/queues", body)
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert field in details, details
    assert isinstance(details[field], list | dict)
    assert tenant.admin.get("/queues/bounds").status_code == 404


def test_several_invalid_fields_are_reported_together(tenant):
    response = tenant.admin.post("/queues", {"name": "x y", "partition_count": 0,
                                             "retention_ms": "1", "status": "gone"})
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert {"name", "partition_count", "retention_ms", "status"} <= set(details)


@pytest.mark.parametrize(("field", "value"), [
    ("name", "a"), ("name", "A" * 200), ("name", "._-"), ("partition_count", 1),
    ("partition_count", 64), ("retention_ms", 60_000), ("retention_ms", 31_536_000_000),
    ("max_message_bytes", 1), ("max_message_bytes", 10 * MIB), ("display_name", None),
    # avro, protobuf and encryption need a schema or a master key: see tests/formats.
    ("message_format", "msgpack"), ("compression_type", "gzip"), ("compression_type", "zstd"),
    ("status", "archived"),
    ("schema_definition", {"$defs": {"id": {"type": "string"}}, "$ref": "#/$defs/id"}),
])
def test_bounds_are_inclusive(tenant, field, value):
    body = {"name": "edge", field: value}
    response = tenant.admin.post("/queues", body)
    assert response.status_code == 201, response.json
    assert response.json[field] == value


def test_kafka_is_422_broker_not_available(tenant):
    response = tenant.admin.post("/queues", {"name": "k", "topic_type": "kafka"})
    details = assert_error(response, 422, "BROKER_NOT_AVAILABLE")
    assert "topic_type" in details
    assert tenant.admin.get("/queues/k").status_code == 404


def test_duplicate_name_is_409_topic_already_exists(tenant):
    tenant.create_queue("dup", partition_count=2)
    response = tenant.admin.post("/queues", {"name": "dup"})
    assert_error(response, 409, "TOPIC_ALREADY_EXISTS")
    assert tenant.admin.get("/queues/dup").json["partition_count"] == 2
    assert tenant.admin.post("/queues", {"name": "DUP"}).status_code == 201


def test_unknown_queue_is_404_topic_not_found(tenant):
    for response in (tenant.admin.get("/queues/missing"),
                     tenant.admin.put("/queues/missing", {"description": "x"}),
                     tenant.admin.delete("/queues/missing"),
                     tenant.admin.post("/queues/missing/purge")):
        details = assert_error(response, 404, "TOPIC_NOT_FOUND")
        assert "missing" in response.json["error"]["message"]
        assert details == {}


# --- listing ---------------------------------------------------------------------------------


def _walk(caller, query: str) -> list[dict]:
    items: list[dict] = []
    cursor = None
    for _ in range(100):
        suffix = f"&cursor={cursor}" if cursor else ""
        page = caller.get(f"/queues?{query}{suffix}")
        assert page.status_code == 200, page.json
        assert set(page.json) == {"items", "next_cursor"}
        items += page.json["items"]
        cursor = page.json["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_list_walks_every_page_once(tenant):
    names = [f"q{i:02d}" for i in range(7)]
    for name in reversed(names):
        tenant.create_queue(name)
    first = tenant.admin.get("/queues?limit=3").json
    assert [q["name"] for q in first["items"]] == names[:3]
    assert isinstance(first["next_cursor"], str)
    for limit in (1, 2, 3, 7, 100):
        items = _walk(tenant.admin, f"limit={limit}")
        assert [q["name"] for q in items] == names
    assert tenant.admin.get("/queues?limit=7").json["next_cursor"] is None
    assert set(first["items"][0]) == TOPIC_FIELDS


def test_list_default_answers_all_with_null_cursor(tenant):
    tenant.create_queue("only")
    body = tenant.admin.get("/queues").json
    assert [q["name"] for q in body["items"]] == ["only"]
    assert body["next_cursor"] is None


def test_list_filters_by_status(tenant):
    tenant.create_queue("a1")
    tenant.create_queue("p1", status="paused")
    tenant.create_queue("x1", status="archived")
    tenant.create_queue("x2", status="archived")
    assert [q["name"] for q in _walk(tenant.admin, "status=archived&limit=1")] == ["x1", "x2"]
    assert [q["name"] for q in _walk(tenant.admin, "status=paused")] == ["p1"]
    assert [q["name"] for q in _walk(tenant.admin, "status=active")] == ["a1"]
    assert_error(tenant.admin.get("/queues?status=gone"), 422, "VALIDATION_ERROR")


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "garbage", "!!!", "a" * 1025, _cursor([1, "x"]), _cursor([{"a": 1}, "x"]),
    _cursor([["a"], "x"]), _cursor(["a", 5]), _cursor(["a\u0000", "x"]), _cursor(["a", "\u0000"]),
    _cursor("ab"), _cursor([None, "x"]), _cursor(["a", "b", "c"]), _cursor(5), _cursor({}),
    _cursor(["\ud800", "x"]), _cursor(["a", "\udfff"]), "é" * 10,
])
def test_invalid_cursor_is_422(tenant, cursor):
    tenant.create_queue("c")
    details = assert_error(tenant.admin.get(f"/queues?cursor={cursor}"), 422, "VALIDATION_ERROR")
    assert "cursor" in details


# --- stats -----------------------------------------------------------------------------------


def test_stats_of_an_empty_queue(tenant):
    tenant.create_queue("empty", partition_count=3)
    stats = tenant.admin.get("/queues/empty").json["stats"]
    assert stats == {
        "length": 0, "first_offset": None, "last_offset": None, "subscriptions": 0,
        "pending": 0, "lag": 0, "published_total": 0,
        "partitions": [{"partition": p, "length": 0, "first_offset": None, "last_offset": None}
                       for p in range(3)],
    }


def test_stats_after_publishing(tenant):
    tenant.create_queue("busy", partition_count=2)
    offsets: dict[int, list[str]] = {0: [], 1: []}
    for partition, count in ((0, 3), (1, 2)):
        for n in range(count):
            r = tenant.admin.post("/publish", {"topic": "busy", "payload": n,
                                               "partition": partition})
            assert r.status_code == 201
            offsets[partition].append(r.json["offset"])
    stats = tenant.admin.get("/queues/busy").json["stats"]
    assert stats["length"] == 5
    assert stats["published_total"] == 5
    assert stats["first_offset"] == offsets[0][0]
    assert stats["last_offset"] == offsets[0][-1]
    assert stats["partitions"] == [
        {"partition": 0, "length": 3, "first_offset": offsets[0][0],
         "last_offset": offsets[0][-1]},
        {"partition": 1, "length": 2, "first_offset": offsets[1][0],
         "last_offset": offsets[1][-1]},
    ]
    assert stats["subscriptions"] == 0 and stats["pending"] == 0 and stats["lag"] == 0
    tenant.admin.post("/queues/busy/purge")
    after = tenant.admin.get("/queues/busy").json["stats"]
    assert after["length"] == 0
    assert after["published_total"] == 5


def test_stats_count_subscriptions_and_lag(tenant, db, redis_client, keys):
    queue = tenant.create_queue("subbed")
    for n in range(4):
        tenant.admin.post("/publish", {"topic": "subbed", "payload": n})
    db.add(Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group="g",
                        consumer_name="c1", subscription_type="redis_consumer",
                        handler_config={"type": "function", "function": "x:y"}))
    db.commit()
    redis_client.xgroup_create(keys.stream(queue["id"], 0), group_name(tenant.id, "g"), id="0")
    stats = tenant.admin.get("/queues/subbed").json["stats"]
    assert stats["subscriptions"] == 1
    assert stats["lag"] == 4
    assert stats["pending"] == 0
    redis_client.xreadgroup(group_name(tenant.id, "g"), "c1",
                            {keys.stream(queue["id"], 0): ">"}, count=3)
    stats = tenant.admin.get("/queues/subbed").json["stats"]
    assert stats["pending"] == 3
    assert stats["lag"] == 1


# --- update ----------------------------------------------------------------------------------


def test_put_is_partial(tenant):
    created = tenant.create_queue("part", description="before", partition_count=2,
                                  allowed_producers=["a"])
    response = tenant.admin.put("/queues/part", {"description": "after", "retention_ms": 120_000})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["description"] == "after"
    assert body["retention_ms"] == 120_000
    unchanged = set(DEFAULTS) - {"description", "retention_ms"}
    assert {k: body[k] for k in unchanged} == {k: created[k] for k in unchanged}
    assert body["id"] == created["id"] and body["created_at"] == created["created_at"]
    assert body["updated_at"] >= created["updated_at"]
    assert tenant.admin.get("/queues/part").json["description"] == "after"
    assert tenant.admin.put("/queues/part", {}).json["description"] == "after"


def test_immutable_fields_may_be_resent_unchanged(tenant):
    tenant.create_queue("imm")
    response = tenant.admin.put("/queues/imm", {"name": "imm", "topic_type": "redis_stream",
                                                "display_name": "Imm"})
    assert response.status_code == 200, response.json
    assert response.json["display_name"] == "Imm"


@pytest.mark.parametrize(("field", "value"), [("name", "other"), ("topic_type", "kafka")])
def test_changing_an_immutable_field_is_422(tenant, field, value):
    tenant.create_queue("imm")
    response = tenant.admin.put("/queues/imm", {field: value, "description": "no"})
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert list(details) == [field]
    body = tenant.admin.get("/queues/imm").json
    assert body["description"] == "" and body["topic_type"] == "redis_stream"
    assert tenant.admin.get("/queues/other").status_code == 404


def test_partition_count_only_grows(tenant, redis_client, keys):
    queue = tenant.create_queue("grow", partition_count=2)
    details = assert_error(tenant.admin.put("/queues/grow", {"partition_count": 1}), 422,
                           "VALIDATION_ERROR")
    assert "partition_count" in details
    assert tenant.admin.put("/queues/grow", {"partition_count": 2}).status_code == 200
    response = tenant.admin.put("/queues/grow", {"partition_count": 5})
    assert response.status_code == 200
    assert response.json["partition_count"] == 5
    published = tenant.admin.post("/publish", {"topic": "grow", "payload": 1, "partition": 4})
    assert published.status_code == 201, published.json
    assert redis_client.xlen(keys.stream(queue["id"], 4)) == 1
    assert len(tenant.admin.get("/queues/grow").json["stats"]["partitions"]) == 5


@pytest.mark.parametrize(("field", "value"), [
    ("partition_count", 65), ("partition_count", "3"), ("retention_ms", 1),
    ("status", "deleted"), ("max_message_bytes", None), ("description", None), ("bogus", 1),
    ("name", "bad name"),
])
def test_put_validates_like_post(tenant, field, value):
    tenant.create_queue("val")
    details = assert_error(tenant.admin.put("/queues/val", {field: value}), 422,
                           "VALIDATION_ERROR")
    assert field in details


def test_archived_queue_rejects_publishes_and_paused_accepts(tenant):
    tenant.create_queue("arch")
    assert tenant.admin.put("/queues/arch", {"status": "archived"}).json["status"] == "archived"
    for response in (
        tenant.admin.post("/publish", {"topic": "arch", "payload": 1}),
        tenant.admin.post("/publish/batch", {"topic": "arch", "messages": [{"payload": 1}]}),
        tenant.admin.post("/topics/arch/publish", {"payload": 1}),
        tenant.admin.post("/topics/arch/publish", {"messages": [{"payload": 1}]}),
    ):
        assert_error(response, 409, "TOPIC_NOT_ACTIVE")
    assert tenant.admin.get("/queues/arch").json["stats"]["length"] == 0
    tenant.admin.put("/queues/arch", {"status": "paused"})
    assert tenant.admin.post("/publish", {"topic": "arch", "payload": 1}).status_code == 201
    tenant.admin.put("/queues/arch", {"status": "active"})
    assert tenant.admin.post("/publish", {"topic": "arch", "payload": 2}).status_code == 201
    assert tenant.admin.get("/queues/arch").json["stats"]["length"] == 2


# --- delete and purge ------------------------------------------------------------------------


def test_delete_removes_the_streams_and_the_queue(tenant, redis_client, keys, db):
    queue = tenant.create_queue("gone", partition_count=3)
    for p in range(3):
        tenant.admin.post("/publish", {"topic": "gone", "payload": p, "partition": p})
    db.add(Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group="g",
                        consumer_name="c", subscription_type="redis_consumer",
                        handler_config={"type": "function", "function": "x:y"}))
    db.commit()
    streams = keys.streams(queue["id"], 3)
    assert redis_client.exists(*streams) == 3
    response = tenant.admin.delete("/queues/gone")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert redis_client.exists(*streams) == 0
    assert_error(tenant.admin.get("/queues/gone"), 404, "TOPIC_NOT_FOUND")
    assert_error(tenant.admin.delete("/queues/gone"), 404, "TOPIC_NOT_FOUND")
    assert "gone" not in [q["name"] for q in tenant.admin.get("/queues").json["items"]]
    db.expire_all()
    assert db.query(Subscription).filter_by(topic_id=queue["id"]).count() == 0
    assert_error(tenant.admin.post("/publish", {"topic": "gone", "payload": 1}), 404,
                 "TOPIC_NOT_FOUND")
    recreated = tenant.create_queue("gone")
    assert recreated["id"] != queue["id"]
    assert tenant.admin.get("/queues/gone").json["stats"]["length"] == 0


def test_purge_empties_the_streams_and_keeps_the_queue(tenant, redis_client, keys):
    queue = tenant.create_queue("pur", partition_count=2)
    for n in range(5):
        tenant.admin.post("/publish", {"topic": "pur", "payload": n, "partition": n % 2})
    redis_client.xgroup_create(keys.stream(queue["id"], 0), "kept-group", id="0")
    response = tenant.admin.post("/queues/pur/purge")
    assert response.status_code == 200
    assert response.json == {"purged": 5}
    assert [redis_client.xlen(k) for k in keys.streams(queue["id"], 2)] == [0, 0]
    groups = redis_client.xinfo_groups(keys.stream(queue["id"], 0))
    assert [g["name"] for g in groups] == ["kept-group"]
    body = tenant.admin.get("/queues/pur").json
    assert body["stats"]["length"] == 0
    assert tenant.admin.post("/queues/pur/purge").json == {"purged": 0}
    assert tenant.admin.post("/publish", {"topic": "pur", "payload": 9}).status_code == 201
    assert tenant.admin.get("/queues/pur").json["stats"]["length"] == 1


def test_purge_of_a_queue_never_published_to(tenant):
    tenant.create_queue("fresh", partition_count=4)
    assert tenant.admin.post("/queues/fresh/purge").json == {"purged": 0}


def test_updates_apply_to_the_very_next_publish(tenant, redis_client, keys):
    """Publishing may cache what it knows of a topic; a PUT must still apply at once."""
    queue = tenant.create_queue("live", partition_count=1)
    producer = tenant.key("producer", name="svc-live")
    assert producer.post("/publish", {"topic": "live", "payload": "x" * 50}).status_code == 201
    tenant.admin.put("/queues/live", {"max_message_bytes": 10})
    assert_error(producer.post("/publish", {"topic": "live", "payload": "x" * 50}), 413,
                 "PAYLOAD_TOO_LARGE")
    tenant.admin.put("/queues/live", {"max_message_bytes": 1000, "partition_count": 3})
    moved = producer.post("/publish", {"topic": "live", "payload": 1, "partition": 2})
    assert moved.status_code == 201, moved.json
    assert redis_client.xlen(keys.stream(queue["id"], 2)) == 1
    tenant.admin.put("/queues/live", {"allowed_producers": ["someone-else"]})
    assert_error(producer.post("/publish", {"topic": "live", "payload": 1}), 403, "FORBIDDEN")
    tenant.admin.put("/queues/live", {"allowed_producers": [], "status": "archived"})
    assert_error(producer.post("/publish", {"topic": "live", "payload": 1}), 409,
                 "TOPIC_NOT_ACTIVE")
    tenant.admin.delete("/queues/live")
    assert_error(producer.post("/publish", {"topic": "live", "payload": 1}), 404,
                 "TOPIC_NOT_FOUND")
    recreated = tenant.create_queue("live")
    again = producer.post("/publish", {"topic": "live", "payload": 1})
    assert again.status_code == 201
    assert redis_client.xlen(keys.stream(recreated["id"], 0)) == 1


def test_growing_partitions_gives_subscribed_groups_the_new_partitions(tenant, db, redis_client,
                                                                       keys):
    queue = tenant.create_queue("spread", partition_count=1)
    db.add(Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group="g",
                        consumer_name="c", subscription_type="redis_consumer",
                        handler_config={"type": "function", "function": "x:y"}))
    db.commit()
    assert tenant.admin.put("/queues/spread", {"partition_count": 3}).status_code == 200
    for partition in (1, 2):
        groups = redis_client.xinfo_groups(keys.stream(queue["id"], partition))
        assert [g["name"] for g in groups] == [group_name(tenant.id, "g")]
