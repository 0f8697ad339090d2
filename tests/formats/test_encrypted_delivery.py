"""End to end through a real worker: handlers get plaintext; tampered ciphertext dead-letters."""

from __future__ import annotations

import json

from redis import Redis

from broker.keys import Keys
from tests.conftest import REDIS_URL
from tests.formats.test_topics_and_publish import SECRET, _stored_row, _stream_entries
from tests.processes import wait_until


def test_handler_receives_plaintext_of_encrypted_and_compressed_topics(
        tenant, subscriptions, webhook, processes, settings):
    vault = tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="gzip")
    tenant.create_queue("packed", message_format="msgpack", compression_type="zstd",
                        encryption="aes-256-gcm")
    subscriptions.create("vault", "billing", webhook.url("/vault"), handler={"envelope": True})
    subscriptions.create("packed", "billing", webhook.url("/packed"))
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": {"card": SECRET},
                                               "headers": {"x-card": SECRET}})
    assert published.status_code == 201, published.json
    assert tenant.admin.post("/publish", {"topic": "packed",
                                          "payload": [1, {"n": 2.5}]}).status_code == 201

    [got] = webhook.wait_for("/vault", 1)
    assert got.json["payload"] == {"card": SECRET}
    assert got.json["headers"] == {"x-card": SECRET}
    assert got.json["message_id"] == published.json["message_id"]
    assert webhook.wait_for("/packed", 1)[0].json == [1, {"n": 2.5}]
    assert all(SECRET not in entry for entry in _stream_entries(settings, vault["id"]))


def test_tampered_ciphertext_is_dead_lettered_with_reason_decrypt(
        tenant, subscriptions, webhook, own_processes, settings):
    """The entry is changed before any worker may read it: no shared worker runs."""
    processes = own_processes
    topic = tenant.create_queue("vault", encryption="aes-256-gcm")
    tenant.create_queue("vault.deadletter")
    sub = subscriptions.create("vault", "billing", webhook.url("/vault"))
    subscriptions.create("vault.deadletter", "ops", webhook.url("/dlq"))
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": {"card": SECRET}})
    assert published.status_code == 201
    _tamper(settings, topic["id"])
    processes.worker()

    letter = webhook.wait_for("/dlq", 1)[0].json
    assert letter["failure_reason"] == "decrypt"
    assert letter["message_id"] == published.json["message_id"]
    assert SECRET not in json.dumps(letter)
    assert webhook.received("/vault") == []  # never garbage to the handler
    listed = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    assert [item["failure_reason"] for item in listed] == ["decrypt"]


def _tamper(settings, topic_id: str) -> None:
    """Replace the one stream entry with a copy whose ciphertext has one character changed."""
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        stream = Keys(settings.redis_namespace).stream(topic_id, 0)
        [(entry_id, fields)] = redis.xrange(stream)
        body = json.loads(fields["m"])
        kid, nonce, sealed = body["p"]["$mq"]["d"].split(".")
        sealed = ("A" if sealed[0] != "A" else "B") + sealed[1:]
        body["p"]["$mq"]["d"] = ".".join((kid, nonce, sealed))
        redis.xdel(stream, entry_id)
        redis.xadd(stream, {"m": json.dumps(body)})
    finally:
        redis.close()


def test_dead_letters_stay_encrypted_at_rest_and_list_in_plaintext(
        tenant, subscriptions, webhook, processes, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm")
    tenant.create_queue("vault.deadletter")
    sub = subscriptions.create("vault", "billing", webhook.url("/vault"))
    webhook.always("/vault", 404)  # a permanent failure: dead-lettered at once
    subscriptions.create("vault.deadletter", "ops", webhook.url("/dlq"))
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": {"card": SECRET},
                                               "headers": {"x-card": SECRET}})
    assert published.status_code == 201

    listed = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    assert listed[0]["payload"] == {"card": SECRET}
    assert listed[0]["headers"] == {"x-card": SECRET}
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        raw = redis.xrange(Keys(settings.redis_namespace).dead_letters(sub["id"]))
    finally:
        redis.close()
    assert raw and all(SECRET not in json.dumps(fields) for _, fields in raw)
    # The dead-letter topic (not encrypted itself) gets the ciphertext, never the plaintext.
    letter = webhook.wait_for("/dlq", 1)[0].json
    assert "$mq" in letter["payload"] and SECRET not in json.dumps(letter)


def test_an_encrypted_dead_letter_topic_stores_ciphertext_and_delivers_plaintext(
        tenant, subscriptions, webhook, processes, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="zstd")
    dead_letters = tenant.create_queue("vault.deadletter", encryption="aes-256-gcm")
    subscriptions.create("vault", "billing", webhook.url("/vault"))
    webhook.always("/vault", 404)  # a permanent failure: dead-lettered at once
    subscriptions.create("vault.deadletter", "ops", webhook.url("/dlq"))
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": {"card": SECRET},
                                               "headers": {"x-card": SECRET}})
    assert published.status_code == 201

    letter = webhook.wait_for("/dlq", 1)[0].json
    assert letter["message_id"] == published.json["message_id"]
    assert (letter["payload"], letter["headers"]) == ({"card": SECRET}, {"x-card": SECRET})
    stored = _stream_entries(settings, dead_letters["id"])
    assert stored and all(SECRET not in entry for entry in stored)
    # Its record (written by the worker in a batch) is ciphertext too, and shown decoded.
    shown = wait_until(lambda: (r := tenant.admin.get(f"/messages/{letter['id']}")).status_code
                       == 200 and r.json)
    assert shown["topic"] == "vault.deadletter"
    assert shown["payload"]["payload"] == {"card": SECRET}
    assert SECRET not in _stored_row(settings, letter["id"])[0]


def test_a_dead_letter_topic_created_on_first_use_is_encrypted_like_its_source(
        tenant, subscriptions, webhook, processes, settings):
    tenant.create_queue("vault", encryption="aes-256-gcm", compression_type="gzip")
    subscriptions.create("vault", "billing", webhook.url("/vault"))
    webhook.always("/vault", 404)
    processes.worker()
    published = tenant.admin.post("/publish", {"topic": "vault", "payload": {"card": SECRET}})
    assert published.status_code == 201

    created = wait_until(lambda: (r := tenant.admin.get("/queues/vault.deadletter"))
                         .status_code == 200 and r.json["stats"]["length"] == 1 and r.json)
    assert (created["encryption"], created["compression_type"]) == ("aes-256-gcm", "gzip")
    stored = _stream_entries(settings, created["id"])
    assert stored and all(SECRET not in entry for entry in stored)
