"""Protobuf topics: payloads are stored in the wire format of their registered `.proto`'s first
message and handed to subscribers as JSON, read with the version they were written with."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from formats import protobuf
from tests.formats.test_codec import PROTO_ORDER
from tests.formats.test_topics_and_publish import _stored_row, _stream_entries

ORDER_V2 = PROTO_ORDER.replace("Status status = 6;", "Status status = 6;\n  string note = 7;")
PUBLISHED = {"id": "o-1", "qty": 3, "tags": ["gift"], "prices": {"mug": 7.5},
             "placed_at": "2026-11-27T10:00:00Z", "status": "PAID"}


def register(tenant, definition: Any, subject: str = "orders-value",
             fmt: str = "protobuf") -> dict:
    response = tenant.admin.post("/schemas", {"subject": subject, "format": fmt,
                                              "definition": definition})
    assert response.status_code in (200, 201), response.json
    return response.json


def test_protobuf_topic_stores_wire_bytes_and_delivers_json_read_with_the_writer_version(
        tenant, settings, subscriptions, webhook, processes):
    first = register(tenant, PROTO_ORDER)
    topic = tenant.create_queue("orders", message_format="protobuf", compression_type="zstd",
                                schema_subject="orders-value")
    subscriptions.create("orders", "billing", webhook.url("/orders"))
    published = tenant.admin.post("/publish", {"topic": "orders", "payload": PUBLISHED})
    assert published.status_code == 201, published.json
    register(tenant, ORDER_V2)  # BACKWARD-compatible; the message keeps reading with v1
    processes.worker()

    [entry] = _stream_entries(settings, topic["id"])
    marker = json.loads(entry)["p"]["$mq"]
    assert (marker["f"], marker["z"], marker["s"]) == ("protobuf", "zstd", first["id"])
    stored, _ = _stored_row(settings, published.json["message_id"])
    assert "gift" not in stored and "placed_at" not in stored
    wire = _unzstd(base64.b64decode(json.loads(stored)["$mq"]["d"]))
    schema = protobuf.compiled(PROTO_ORDER)
    assert schema.message_class().FromString(wire).tags == ["gift"]

    assert tenant.admin.get(f"/messages/{published.json['message_id']}").json["payload"] \
        == PUBLISHED
    assert webhook.wait_for("/orders", 1)[0].json == PUBLISHED  # no `note`: written by v1


def test_dead_letter_topic_subscribers_read_protobuf_dead_letters_as_json(
        tenant, settings, subscriptions, webhook, processes):
    """The listing keeps the stored form (decoded when shown); the dead-letter topic's
    subscribers get the payload as JSON, like the subscribers of the topic itself."""
    register(tenant, PROTO_ORDER)
    tenant.create_queue("orders", message_format="protobuf", compression_type="gzip",
                        schema_subject="orders-value")
    tenant.create_queue("orders.deadletter")
    subscription = subscriptions.create("orders", "billing", webhook.url("/refuses"))
    webhook.always("/refuses", 404)  # permanent: dead-lettered at once
    subscriptions.create("orders.deadletter", "ops", webhook.url("/dlq"))
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "orders", "payload": PUBLISHED,
                                               "headers": {"x-source": "shop"}})
    assert published.status_code == 201, published.json

    letter = webhook.wait_for("/dlq", 1)[0].json
    assert letter["message_id"] == published.json["message_id"]
    assert letter["payload"] == PUBLISHED
    assert letter["headers"] == {"x-source": "shop"}
    listed = tenant.admin.get(f"/subscriptions/{subscription['id']}/dead-letters").json["items"]
    assert listed[0]["payload"] == PUBLISHED


def test_new_version_writes_at_once_and_camel_case_input_is_accepted(tenant, settings):
    register(tenant, PROTO_ORDER)
    topic = tenant.create_queue("orders", message_format="protobuf",
                                schema_subject="orders-value")
    second = register(tenant, ORDER_V2)
    published = tenant.admin.post("/publish", {"topic": "orders", "payload": {
        "id": "o-2", "placedAt": "2026-11-27T10:00:00Z", "note": "ring twice"}})
    assert published.status_code == 201, published.json
    [entry] = _stream_entries(settings, topic["id"])
    assert json.loads(entry)["p"]["$mq"]["s"] == second["id"]
    shown = tenant.admin.get(f"/messages/{published.json['message_id']}").json["payload"]
    assert shown["note"] == "ring twice" and shown["placed_at"] == "2026-11-27T10:00:00Z"
    assert shown["qty"] == 0  # proto3 zero values are part of the message


@pytest.mark.parametrize(("payload", "path"), [
    ({"id": "o-1", "qty": "three"}, "/qty"),
    ({"id": "o-1", "colour": "red"}, "/colour"),
    ({"id": "o-1", "status": "LOST"}, "/status"),
    ({"id": "o-1", "placed_at": "yesterday"}, "/placed_at"),
    ("o-1", "/"),
])
def test_payload_that_does_not_fit_is_refused_with_its_path(tenant, settings, payload, path):
    register(tenant, PROTO_ORDER)
    topic = tenant.create_queue("orders", message_format="protobuf",
                                schema_subject="orders-value")
    response = tenant.admin.post("/publish", {"topic": "orders", "payload": payload})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "SCHEMA_VALIDATION_ERROR"
    assert f"(at {path})" in response.json["error"]["details"]["payload"][0]
    batch = tenant.admin.post("/publish/batch", {"topic": "orders", "messages": [
        {"payload": {"id": "fine"}}, {"payload": payload}]})
    assert batch.status_code == 422
    assert "1" in batch.json["error"]["details"]["messages"]
    assert _stream_entries(settings, topic["id"]) == []


def test_payload_passing_an_inline_json_schema_but_not_the_proto_is_a_serialization_error(
        tenant, settings):
    register(tenant, PROTO_ORDER)
    topic = tenant.create_queue("orders", message_format="protobuf",
                                schema_subject="orders-value",
                                schema_definition={"type": "object"})
    response = tenant.admin.post("/publish", {"topic": "orders", "payload": {"qty": "many"}})
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "SERIALIZATION_ERROR"
    assert _stream_entries(settings, topic["id"]) == []


@pytest.mark.parametrize(("subject", "fmt", "definition"), [
    (None, None, None),
    ("json-value", "json", {"type": "object"}),
    ("avro-value", "avro", {"type": "record", "name": "R", "fields": []}),
])
def test_protobuf_topic_needs_a_protobuf_subject(tenant, subject, fmt, definition):
    fields = {"name": "orders", "message_format": "protobuf"}
    if subject is not None:
        register(tenant, definition, subject, fmt)
        fields["schema_subject"] = subject
    response = tenant.admin.post("/queues", fields)
    assert response.status_code == 422, response.json
    assert "message_format" in response.json["error"]["details"]


def test_existing_topic_becomes_protobuf_only_with_a_protobuf_subject(tenant):
    tenant.create_queue("orders")
    refused = tenant.admin.put("/queues/orders", {"message_format": "protobuf"})
    assert refused.status_code == 422
    register(tenant, PROTO_ORDER)
    changed = tenant.admin.put("/queues/orders", {"message_format": "protobuf",
                                                  "schema_subject": "orders-value"})
    assert changed.status_code == 200, changed.json
    assert changed.json["message_format"] == "protobuf"


def test_invalid_proto_is_refused_with_its_line(tenant):
    response = tenant.admin.post("/schemas", {
        "subject": "orders-value", "format": "protobuf",
        "definition": 'syntax = "proto3";\nmessage Order {\n  Money total = 1;\n}\n'})
    assert response.status_code == 422, response.json
    assert "line 3" in json.dumps(response.json["error"])


def _unzstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)
