"""Formats, compression and encryption through the API: what is stored, what is shown."""

from __future__ import annotations

import dataclasses
import json

import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from broker.keys import Keys
from tests.conftest import REDIS_URL, make_tenant
from tests.formats.test_codec import AVRO_ORDER, ORDER

SECRET = "card-4111-1111-1111-1111"


def _stream_entries(settings, topic_id: str) -> list[str]:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [fields["m"] for _, fields in
                redis.xrange(Keys(settings.redis_namespace).stream(topic_id, 0))]
    finally:
        redis.close()


def _stored_row(settings, message_id: str) -> tuple[str, str]:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text(
                "SELECT CAST(payload AS TEXT), CAST(headers AS TEXT) FROM message_records "
                "WHERE message_id = :id"), {"id": message_id}).one()
    finally:
        engine.dispose()
    return row[0], row[1]


def test_encrypted_topic_stores_ciphertext_and_shows_plaintext(tenant, settings):
    topic = tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="zstd")
    payload = {"card": SECRET, "amount": 12.5}
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": payload,
                                               "key": "customer-7",
                                               "headers": {"x-card": SECRET}})
    assert published.status_code == 201, published.json
    message_id = published.json["message_id"]

    [entry] = _stream_entries(settings, topic["id"])
    assert SECRET not in entry and "amount" not in entry
    stored = json.loads(entry)
    assert stored["k"] == "customer-7"  # the key stays clear: it picks the partition
    assert stored["p"]["$mq"]["e"] == "aes-256-gcm"
    db_payload, db_headers = _stored_row(settings, message_id)
    assert SECRET not in db_payload and "amount" not in db_payload
    assert SECRET not in db_headers and "x-card" not in db_headers

    shown = tenant.admin.get(f"/messages/{message_id}").json
    assert shown["payload"] == payload
    assert shown["headers"] == {"x-card": SECRET}


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize(("message_format", "payload", "extra"), [
    ("json", {"a": [1, "b", None]}, {}),
    ("msgpack", {"a": [1, "b", None], "n": 2.5}, {}),
    ("avro", ORDER, {"schema_definition": AVRO_ORDER}),
])
def test_every_format_and_compression_round_trips_through_the_api(
        tenant, settings, message_format, payload, extra, compression):
    name = f"{message_format}-{compression}"
    topic = tenant.create_queue(name, message_format=message_format,
                                compression_type=compression, **extra)
    assert topic["message_format"] == message_format
    response = tenant.admin.post("/publish", {"topic": name, "payload": payload})
    assert response.status_code == 201, response.json
    shown = tenant.admin.get(f"/messages/{response.json['message_id']}").json
    assert shown["payload"] == payload
    [entry] = _stream_entries(settings, topic["id"])
    if (message_format, compression) != ("json", "none"):
        assert json.loads(entry)["p"]["$mq"]["f"] == message_format


@pytest.mark.parametrize("payload", ["a json string", {"id": "o-1", "qty": "three", "tags": []},
                                     {"id": "o-1"}])
def test_payload_that_does_not_fit_the_avro_schema_is_refused(tenant, settings, payload):
    """The topic's schema check runs first, so a misfit is `422 SCHEMA_VALIDATION_ERROR`;
    nothing reaches the stream."""
    topic = tenant.create_queue("typed", message_format="avro", schema_definition=AVRO_ORDER)
    response = tenant.admin.post("/publish", {"topic": "typed", "payload": payload})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "SCHEMA_VALIDATION_ERROR"
    assert _stream_entries(settings, topic["id"]) == []


def test_batch_with_one_unencodable_payload_publishes_nothing(tenant, settings):
    topic = tenant.create_queue("typed", message_format="avro", schema_definition=AVRO_ORDER)
    response = tenant.admin.post("/publish/batch", {"topic": "typed", "messages": [
        {"payload": ORDER}, {"payload": [1, 2]}]})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "SCHEMA_VALIDATION_ERROR"
    assert "1" in response.json["error"]["details"]["messages"]
    assert _stream_entries(settings, topic["id"]) == []


def test_not_a_number_is_refused_before_any_format(tenant):
    tenant.create_queue("packed", message_format="msgpack")
    response = tenant.admin.post("/publish", data='{"topic": "packed", "payload": {"x": NaN}}',
                                 content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("batch", [False, True])
def test_integer_too_large_for_msgpack_is_a_serialization_error(tenant, settings, batch):
    topic = tenant.create_queue("packed", message_format="msgpack", compression_type="gzip")
    payload = {"x": 2**70}
    if batch:
        response = tenant.admin.post("/publish/batch", {"topic": "packed", "messages": [
            {"payload": {"x": 1}}, {"payload": payload}]})
    else:
        response = tenant.admin.post("/publish", {"topic": "packed", "payload": payload})
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "SERIALIZATION_ERROR"
    details = response.json["error"]["details"]
    assert ("payload" in details["messages"]["1"]) if batch else ("payload" in details)
    assert _stream_entries(settings, topic["id"]) == []


@pytest.mark.parametrize(("fields", "field"), [
    ({"message_format": "avro"}, "message_format"),
    ({"message_format": "avro", "schema_definition": {"type": "object"}}, "message_format"),
    ({"message_format": "protobuf"}, "message_format"),
])
def test_formats_without_what_they_need_are_refused(tenant, fields, field):
    response = tenant.admin.post("/queues", {"name": "q", **fields})
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]


def test_encryption_without_a_master_key_is_refused(settings):
    from api import create_app

    client = create_app(dataclasses.replace(settings, mq_master_key=None)).test_client()
    tenant = make_tenant(client)
    response = tenant.admin.post("/queues", {"name": "vault", "encryption": "aes-256-gcm"})
    assert response.status_code == 422
    assert "MQ_MASTER_KEY" in response.json["error"]["message"]
    tenant.create_queue("plain")
    response = tenant.admin.put("/queues/plain", {"encryption": "aes-256-gcm"})
    assert response.status_code == 422
    assert "encryption" in response.json["error"]["details"]


def test_rotated_master_key_still_shows_old_messages(tenant, settings):
    from api import create_app

    old_key = settings.mq_old_master_keys[0]
    before = create_app(dataclasses.replace(settings, mq_master_key=old_key,
                                            mq_old_master_keys=())).test_client()
    old_tenant = make_tenant(before)
    old_tenant.create_queue("vault", encryption="aes-256-gcm")
    published = old_tenant.admin.post("/publish", {"topic": "vault", "payload": {"s": SECRET}})
    assert published.status_code == 201
    # `settings` (current key new, the old one retired) is what the `client` app runs with.
    after = dataclasses.replace(old_tenant.admin, client=tenant.client)
    shown = after.get(f"/messages/{published.json['message_id']}").json
    assert shown["payload"] == {"s": SECRET}
