"""Avro topics bound to a schema-registry subject write with the subject's version."""

from __future__ import annotations

import json

from tests.formats.test_codec import AVRO_ORDER, ORDER
from tests.formats.test_registry_protobuf import register
from tests.formats.test_topics_and_publish import _stream_entries

ORDER_V2 = {**AVRO_ORDER, "fields": [*AVRO_ORDER["fields"],
                                     {"name": "note", "type": "string", "default": ""}]}


def test_subject_bound_avro_topic_round_trips_and_reads_with_the_writer_version(
        tenant, settings, subscriptions, webhook, processes):
    first = register(tenant, AVRO_ORDER, fmt="avro")
    topic = tenant.create_queue("orders", message_format="avro", compression_type="zstd",
                                encryption="aes-256-gcm", schema_subject="orders-value")
    subscriptions.create("orders", "billing", webhook.url("/orders"))
    old = tenant.admin.post("/publish", {"topic": "orders", "payload": ORDER})
    assert old.status_code == 201, old.json
    register(tenant, ORDER_V2, fmt="avro")  # a new version: the old message reads with v1
    processes.worker()

    [entry] = _stream_entries(settings, topic["id"])
    assert json.loads(entry)["p"]["$mq"]["s"] == first["id"]
    assert tenant.admin.get(f"/messages/{old.json['message_id']}").json["payload"] == ORDER
    assert webhook.wait_for("/orders", 1)[0].json == ORDER


def test_avro_topic_needs_an_avro_subject(tenant):
    tenant.admin.post("/schemas", {"subject": "json-value", "format": "json",
                                   "definition": {"type": "object"}})
    response = tenant.admin.post("/queues", {"name": "orders", "message_format": "avro",
                                             "schema_subject": "json-value"})
    assert response.status_code == 422
    assert "message_format" in response.json["error"]["details"]
