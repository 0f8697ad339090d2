"""Publishing: stored in PostgreSQL and in the stream, idempotency, batches, partitioning."""

from __future__ import annotations

import re
import threading
import uuid
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from broker.envelope import Envelope
from models import MessageRecord
from tests.api.conftest import assert_error
from tests.conftest import Caller
from tests.processes import wait_until

OFFSET = re.compile(r"^\d+-\d+$")


def stream_entries(redis_client, keys, topic_id: str, partition: int = 0) -> list:
    return [(entry_id, Envelope.decode(fields))
            for entry_id, fields in redis_client.xrange(keys.stream(topic_id, partition))]


def record_count(db, topic_id: str) -> int:
    return db.scalar(select(func.count()).select_from(MessageRecord)
                     .where(MessageRecord.topic_id == topic_id))


# --- single ----------------------------------------------------------------------------------


def test_publish_answers_201_and_stores_in_stream_and_database(tenant, redis_client, keys, db):
    queue = tenant.create_queue("orders")
    body = {"topic": "orders", "payload": {"n": 1, "s": "ü"}, "key": "k1",
            "headers": {"type": "order.created"}, "correlation_id": "corr", "trace_id": "tr",
            "content_type": "application/vnd.test+json", "ttl_ms": 60_000}
    response = tenant.admin.post("/publish", body)
    assert response.status_code == 201, response.json
    answer = response.json
    assert set(answer) == {"message_id", "topic", "partition", "offset", "timestamp",
                           "duplicate"}
    assert answer["topic"] == "orders"
    assert answer["partition"] == 0
    assert answer["duplicate"] is False
    assert OFFSET.match(answer["offset"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", answer["timestamp"])

    [(entry_id, envelope)] = stream_entries(redis_client, keys, queue["id"])
    assert entry_id == answer["offset"]
    assert envelope.message_id == answer["message_id"]
    assert envelope.payload == {"n": 1, "s": "ü"}
    assert envelope.key == "k1"
    assert envelope.headers == {"type": "order.created"}
    assert envelope.correlation_id == "corr" and envelope.trace_id == "tr"
    assert envelope.content_type == "application/vnd.test+json"
    assert envelope.expires_ms - envelope.published_ms == 60_000

    record = db.scalar(select(MessageRecord).where(MessageRecord.message_id ==
                                                   answer["message_id"]))
    assert record is not None
    assert record.tenant_id == tenant.id and record.topic_id == queue["id"]
    assert record.payload == {"n": 1, "s": "ü"}
    assert record.status == "published"
    assert record.message_key == "k1"
    # The offset is written back with the writer's next group, or when it idles.
    assert wait_until(lambda: db.scalar(select(MessageRecord.offset_value).where(
        MessageRecord.id == record.id).execution_options(populate_existing=True))
        or db.rollback()) == answer["offset"]


@pytest.mark.parametrize("payload", [None, 0, -1.5, 10**30, "", "text", [], {}, [1, [2, {}]],
                                     True, False, {"nested": {"deep": [None, "x"]}}])
def test_payload_may_be_any_json_including_null(tenant, payload, redis_client, keys):
    queue = tenant.create_queue("any")
    response = tenant.admin.post("/publish", {"topic": "any", "payload": payload})
    assert response.status_code == 201, response.json
    got = tenant.admin.get(f"/messages/{response.json['message_id']}").json
    assert got["payload"] == payload
    [(_, envelope)] = stream_entries(redis_client, keys, queue["id"])
    assert envelope.payload == payload


def test_payload_is_required(tenant):
    tenant.create_queue("req")
    details = assert_error(tenant.admin.post("/publish", {"topic": "req"}), 422,
                           "VALIDATION_ERROR")
    assert "payload" in details
    details = assert_error(tenant.admin.post("/publish", {"payload": 1}), 422,
                           "VALIDATION_ERROR")
    assert "topic" in details


@pytest.mark.parametrize(("field", "value"), [
    ("headers", {"a": 1}), ("headers", ["a"]), ("headers", "a=b"), ("headers", {"": "x"}),
    ("key", 5), ("key", {"a": 1}), ("key", "k" * 501), ("message_id", ""), ("message_id", 5),
    ("message_id", "m" * 201), ("partition", -1), ("partition", "0"), ("partition", 1.5),
    ("partition", True), ("partition", 64), ("ttl_ms", 0), ("ttl_ms", "100"),
    ("ttl_ms", 10**20), ("correlation_id", 1), ("trace_id", []), ("content_type", ""),
    ("unknown", 1),
])
def test_invalid_message_fields_are_422(tenant, field, value):
    tenant.create_queue("bad")
    response = tenant.admin.post("/publish", {"topic": "bad", "payload": 1, field: value})
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert field in details
    assert tenant.admin.get("/queues/bad").json["stats"]["length"] == 0


def test_publish_to_unknown_topic_is_404(tenant):
    assert_error(tenant.admin.post("/publish", {"topic": "nope", "payload": 1}), 404,
                 "TOPIC_NOT_FOUND")
    assert_error(tenant.admin.post("/topics/nope/publish", {"payload": 1}), 404,
                 "TOPIC_NOT_FOUND")
    assert_error(tenant.admin.post("/publish/batch", {"topic": "nope",
                                                      "messages": [{"payload": 1}]}),
                 404, "TOPIC_NOT_FOUND")


def test_message_over_max_message_bytes_is_413(tenant, redis_client, keys, db):
    queue = tenant.create_queue("small", max_message_bytes=100)
    ok = tenant.admin.post("/publish", {"topic": "small", "payload": "x" * 90})
    assert ok.status_code == 201
    response = tenant.admin.post("/publish", {"topic": "small", "payload": "x" * 200})
    details = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "payload" in details
    response = tenant.admin.post("/publish/batch", {"topic": "small", "messages": [
        {"payload": 1}, {"payload": "x" * 200}]})
    details = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "1" in details["messages"]
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 1
    assert record_count(db, queue["id"]) == 1


# --- idempotency -----------------------------------------------------------------------------


def test_duplicate_message_id_publishes_nothing(tenant, redis_client, keys, db):
    queue = tenant.create_queue("idem")
    first = tenant.admin.post("/publish", {"topic": "idem", "payload": 1, "message_id": "m-1"})
    assert first.status_code == 201
    assert first.json["message_id"] == "m-1"
    again = tenant.admin.post("/publish", {"topic": "idem", "payload": 2, "message_id": "m-1"})
    assert again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 1
    assert record_count(db, queue["id"]) == 1
    assert tenant.admin.get("/messages/m-1").json["payload"] == 1


def test_duplicate_through_every_publish_form(tenant, redis_client, keys):
    queue = tenant.create_queue("idem2")
    first = tenant.admin.post("/topics/idem2/publish", {"payload": 1, "message_id": "x"}).json
    again = tenant.admin.post("/topics/idem2/publish", {"payload": 1, "message_id": "x"})
    assert again.status_code == 200 and again.json["duplicate"] is True
    batch = tenant.admin.post("/publish/batch", {"topic": "idem2", "messages": [
        {"payload": 1, "message_id": "x"}]})
    assert batch.status_code == 200
    assert batch.json["message_ids"] == ["x"]
    assert batch.json["partitions"] == [{"partition": 0, "offset": first["offset"]}]
    assert batch.json["duplicates"] == [0]
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 1


def test_message_ids_are_unique_per_tenant_across_topics(tenant, other_tenant, redis_client,
                                                         keys):
    a = tenant.create_queue("a")
    b = tenant.create_queue("b")
    first = tenant.admin.post("/publish", {"topic": "a", "payload": 1, "message_id": "shared"})
    again = tenant.admin.post("/publish", {"topic": "b", "payload": 1, "message_id": "shared"})
    assert again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}
    assert again.json["topic"] == "a"
    assert redis_client.xlen(keys.stream(a["id"], 0)) == 1
    assert redis_client.exists(keys.stream(b["id"], 0)) == 0
    other_tenant.create_queue("a")
    theirs = other_tenant.admin.post("/publish", {"topic": "a", "payload": 1,
                                                  "message_id": "shared"})
    assert theirs.status_code == 201
    assert theirs.json["duplicate"] is False


def test_generated_message_ids_are_distinct(tenant):
    tenant.create_queue("gen")
    ids = {tenant.admin.post("/publish", {"topic": "gen", "payload": n}).json["message_id"]
           for n in range(5)}
    assert len(ids) == 5


# --- batches ---------------------------------------------------------------------------------


def test_batch_keeps_order_and_answers_per_message(tenant, redis_client, keys, db):
    queue = tenant.create_queue("batch")
    messages = [{"payload": {"n": n}, "message_id": f"b-{n}"} for n in range(10)]
    response = tenant.admin.post("/publish/batch", {"topic": "batch", "messages": messages,
                                                    "options": {"compression": "none",
                                                                "acks": "all", "timeout": 5}})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["message_ids"] == [f"b-{n}" for n in range(10)]
    assert len(body["partitions"]) == 10
    assert body["duplicates"] == []
    assert body["timestamp"].endswith("Z")
    entries = stream_entries(redis_client, keys, queue["id"])
    assert [e.payload for _, e in entries] == [{"n": n} for n in range(10)]
    assert [p["offset"] for p in body["partitions"]] == [entry_id for entry_id, _ in entries]
    assert all(p["partition"] == 0 for p in body["partitions"])
    assert record_count(db, queue["id"]) == 10


def test_batch_lists_duplicates_by_index(tenant, redis_client, keys):
    queue = tenant.create_queue("bdup")
    first = tenant.admin.post("/publish", {"topic": "bdup", "payload": 0, "message_id": "old"})
    response = tenant.admin.post("/publish/batch", {"topic": "bdup", "messages": [
        {"payload": 1, "message_id": "new-1"}, {"payload": 2, "message_id": "old"},
        {"payload": 3, "message_id": "new-1"}, {"payload": 4}]})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["message_ids"][:3] == ["new-1", "old", "new-1"]
    assert body["duplicates"] == [1, 2]
    assert body["partitions"][1] == {"partition": 0, "offset": first.json["offset"]}
    assert body["partitions"][2] == body["partitions"][0]
    entries = stream_entries(redis_client, keys, queue["id"])
    assert [e.payload for _, e in entries] == [0, 1, 4]


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_bounds(tenant, count):
    tenant.create_queue("bounds")
    response = tenant.admin.post("/publish/batch", {"topic": "bounds",
                                                    "messages": [{"payload": 1}] * count})
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert "messages" in details
    assert tenant.admin.get("/queues/bounds").json["stats"]["length"] == 0


def test_batch_of_1000_is_accepted(tenant, redis_client, keys):
    queue = tenant.create_queue("thousand", partition_count=4)
    response = tenant.admin.post("/publish/batch", {"topic": "thousand", "messages": [
        {"payload": n, "key": f"k{n % 13}"} for n in range(1000)]})
    assert response.status_code == 201
    assert len(response.json["message_ids"]) == 1000 == len(set(response.json["message_ids"]))
    assert sum(redis_client.xlen(k) for k in keys.streams(queue["id"], 4)) == 1000


@pytest.mark.parametrize(("bad", "field"), [
    ({}, "payload"), ({"payload": 1, "headers": {"a": 2}}, "headers"),
    ({"payload": 1, "partition": 5}, "partition"), ({"payload": 1, "key": 7}, "key"),
    ({"payload": 1, "extra": True}, "extra"),
])
def test_one_bad_message_rejects_the_whole_batch(tenant, redis_client, keys, db, bad, field):
    queue = tenant.create_queue("allornothing", partition_count=2)
    messages = [{"payload": n} for n in range(5)]
    messages.insert(3, bad)
    response = tenant.admin.post("/publish/batch", {"topic": "allornothing",
                                                    "messages": messages})
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert list(details) == ["messages"]
    assert list(details["messages"]) == ["3"]
    assert field in details["messages"]["3"]
    assert isinstance(details["messages"]["3"][field], list | dict)
    assert sum(redis_client.xlen(k) for k in keys.streams(queue["id"], 2)) == 0
    assert record_count(db, queue["id"]) == 0


@pytest.mark.parametrize("body", [
    {"messages": [{"payload": 1}]}, {"topic": "t"}, {"topic": "t", "messages": None},
    {"topic": "t", "messages": {"payload": 1}}, {"topic": "t", "messages": [1, 2]},
    {"topic": "t", "messages": [{"payload": 1}], "options": {"compression": "lz4"}},
    {"topic": "t", "messages": [{"payload": 1}], "options": {"timeout": "1"}},
    {"topic": "t", "messages": [{"payload": 1}], "options": 5},
])
def test_malformed_batches_are_422(tenant, body):
    tenant.create_queue("t")
    assert_error(tenant.admin.post("/publish/batch", body), 422, "VALIDATION_ERROR")
    assert tenant.admin.get("/queues/t").json["stats"]["length"] == 0


def test_batch_over_5_mib_is_413(tenant, redis_client, keys, db):
    queue = tenant.create_queue("huge")
    chunk = "x" * 900_000
    response = tenant.admin.post("/publish/batch", {"topic": "huge", "messages": [
        {"payload": chunk} for _ in range(6)]})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 0
    assert record_count(db, queue["id"]) == 0
    fits = tenant.admin.post("/publish/batch", {"topic": "huge", "messages": [
        {"payload": chunk} for _ in range(5)]})
    assert fits.status_code == 201


# --- partitioning ----------------------------------------------------------------------------


def test_same_key_goes_to_one_partition_in_publish_order(tenant, redis_client, keys):
    queue = tenant.create_queue("keyed", partition_count=4)
    sent: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    seq = 0
    for _ in range(4):
        for k in range(12):
            key = f"customer-{k}"
            response = tenant.admin.post("/publish", {"topic": "keyed", "key": key,
                                                      "payload": {"seq": seq, "key": key}})
            assert response.status_code == 201
            partitions[key].add(response.json["partition"])
            sent[key].append(seq)
            seq += 1
        batch = [{"key": f"customer-{k}", "payload": {"seq": seq + k, "key": f"customer-{k}"}}
                 for k in range(12)]
        response = tenant.admin.post("/publish/batch", {"topic": "keyed", "messages": batch})
        for k, p in enumerate(response.json["partitions"]):
            partitions[f"customer-{k}"].add(p["partition"])
            sent[f"customer-{k}"].append(seq + k)
        seq += 12
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len({next(iter(p)) for p in partitions.values()}) > 1  # keys spread out
    for key, [partition] in partitions.items():
        entries = stream_entries(redis_client, keys, queue["id"], partition)
        seen = [e.payload["seq"] for _, e in entries if e.key == key]
        assert seen == sent[key]


def test_messages_without_key_spread_over_partitions(tenant):
    tenant.create_queue("rr", partition_count=3)
    used = {tenant.admin.post("/publish", {"topic": "rr", "payload": n}).json["partition"]
            for n in range(9)}
    assert used == {0, 1, 2}


def test_explicit_partition(tenant, redis_client, keys):
    queue = tenant.create_queue("explicit", partition_count=3)
    response = tenant.admin.post("/publish", {"topic": "explicit", "payload": 1,
                                              "partition": 2, "key": "any"})
    assert response.json["partition"] == 2
    [(entry_id, _)] = stream_entries(redis_client, keys, queue["id"], 2)
    assert entry_id == response.json["offset"]
    batch = tenant.admin.post("/publish/batch", {"topic": "explicit", "messages": [
        {"payload": 1, "partition": 1}, {"payload": 2, "partition": 0}]})
    assert [p["partition"] for p in batch.json["partitions"]] == [1, 0]


def test_partition_out_of_range_is_422(tenant, redis_client, keys):
    queue = tenant.create_queue("range", partition_count=2)
    details = assert_error(tenant.admin.post("/publish", {"topic": "range", "payload": 1,
                                                          "partition": 2}),
                           422, "VALIDATION_ERROR")
    assert "partition" in details
    details = assert_error(tenant.admin.post("/publish/batch", {"topic": "range", "messages": [
        {"payload": 1}, {"payload": 1, "partition": 2}]}), 422, "VALIDATION_ERROR")
    assert "partition" in details["messages"]["1"]
    assert sum(redis_client.xlen(k) for k in keys.streams(queue["id"], 2)) == 0


# --- /topics/{name}/publish ------------------------------------------------------------------


def test_topic_path_single_and_batch(tenant, redis_client, keys):
    queue = tenant.create_queue("path")
    single = tenant.admin.post("/topics/path/publish", {"payload": {"a": 1}, "key": "k"})
    assert single.status_code == 201
    assert set(single.json) == {"message_id", "topic", "partition", "offset", "timestamp",
                                "duplicate"}
    assert single.json["topic"] == "path"
    batch = tenant.admin.post("/topics/path/publish", {"messages": [{"payload": 1},
                                                                    {"payload": None}]})
    assert batch.status_code == 201
    assert {"message_ids", "partitions", "timestamp"} <= set(batch.json)
    assert len(batch.json["message_ids"]) == 2
    entries = stream_entries(redis_client, keys, queue["id"])
    assert [e.payload for _, e in entries] == [{"a": 1}, 1, None]
    null_payload = tenant.admin.post("/topics/path/publish", {"payload": None})
    assert null_payload.status_code == 201


@pytest.mark.parametrize("body", [{}, {"key": "k"}, {"messages": []},
                                  {"messages": [{"key": "k"}]}, {"topic": "path", "payload": 1}])
def test_topic_path_validation(tenant, body):
    tenant.create_queue("path")
    assert_error(tenant.admin.post("/topics/path/publish", body), 422, "VALIDATION_ERROR")
    assert tenant.admin.get("/queues/path").json["stats"]["length"] == 0


# --- producers -------------------------------------------------------------------------------


def test_allowed_producers_restrict_producer_keys_only(tenant):
    tenant.create_queue("guarded", allowed_producers=["svc-ok"])
    allowed = tenant.key("producer", name="svc-ok")
    denied = tenant.key("producer", name="svc-no")
    other_admin = tenant.key("admin", name="second-admin")
    for body_path, body in (("/publish", {"topic": "guarded", "payload": 1}),
                            ("/publish/batch", {"topic": "guarded",
                                                "messages": [{"payload": 1}]}),
                            ("/topics/guarded/publish", {"payload": 1})):
        assert_error(denied.post(body_path, body), 403, "FORBIDDEN")
        assert allowed.post(body_path, body).status_code == 201
        assert tenant.admin.post(body_path, body).status_code == 201
        assert other_admin.post(body_path, body).status_code == 201
    assert tenant.admin.get("/queues/guarded").json["stats"]["length"] == 9


def test_empty_allowed_producers_lets_every_producer_publish(tenant):
    tenant.create_queue("open")
    producer = tenant.key("producer")
    assert producer.post("/publish", {"topic": "open", "payload": 1}).status_code == 201


def test_producer_is_recorded(tenant, db):
    tenant.create_queue("who")
    tenant.key("producer", name="svc-who").post("/publish", {"topic": "who", "payload": 1,
                                                             "message_id": "who-1"})
    record = db.scalar(select(MessageRecord).where(MessageRecord.message_id == "who-1",
                                                   MessageRecord.tenant_id == tenant.id))
    assert record.producer_id == "svc-who"


def test_message_ids_are_strings_even_when_generated(tenant):
    tenant.create_queue("ids")
    message_id = tenant.admin.post("/publish", {"topic": "ids", "payload": 1}).json["message_id"]
    assert isinstance(message_id, str)
    uuid.UUID(message_id)


def test_concurrent_publishes_of_one_message_id_store_it_once(app, tenant, redis_client, keys,
                                                              db):
    queue = tenant.create_queue("race")
    answers: list[tuple[int, int, dict]] = []

    def publish(attempt: int, barrier: threading.Barrier) -> None:
        caller = Caller(app.test_client(), tenant.admin.token)
        barrier.wait()
        response = caller.post("/publish", {"topic": "race", "payload": attempt,
                                            "message_id": f"race-{attempt}"})
        answers.append((attempt, response.status_code, response.json))

    for attempt in range(8):
        barrier = threading.Barrier(5)
        threads = [threading.Thread(target=publish, args=(attempt, barrier)) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(answers) == 40
    for attempt in range(8):
        mine = [(status, body) for a, status, body in answers if a == attempt]
        assert sorted(status for status, _ in mine) == [200, 200, 200, 200, 201], mine
        for status, body in mine:
            assert body["duplicate"] is (status == 200)
            assert body["message_id"] == f"race-{attempt}"
            assert body["topic"] == "race"
    assert redis_client.xlen(keys.stream(queue["id"], 0)) == 8
    assert record_count(db, queue["id"]) == 8


def test_max_message_bytes_counts_utf8_bytes_of_the_payload(tenant):
    tenant.create_queue("edge", max_message_bytes=100)
    for payload, status in (("x" * 98, 201), ("x" * 99, 413), ("ü" * 49, 201),
                            ("ü" * 50, 413), ({"k": "x" * 92}, 201), ({"k": "x" * 93}, 413)):
        response = tenant.admin.post("/publish", {"topic": "edge", "payload": payload})
        assert response.status_code == status, (payload, response.json)


def test_publishing_to_a_topic_deleted_meanwhile_is_404(app, tenant, redis_client, keys):
    """A publish that looked its topic up just before the topic was deleted answers 404."""
    from api.context import scope
    from api.dependencies import Principal
    from api.services.lookups import find_topic
    from api.services.publishing import publish
    from mq.errors import TopicNotFound
    from publishing.messages import PublishTarget

    queue = tenant.create_queue("vanishing")
    caller = Principal(tenant.id, tenant.name, "key-id", "admin", "admin")
    with app.test_request_context():
        here = scope()
        target = PublishTarget.of(find_topic(here.session, tenant.id, "vanishing"))
        here.session.rollback()
        assert tenant.admin.delete("/queues/vanishing").status_code == 204
        with pytest.raises(TopicNotFound):
            publish(here, target, caller, [{"payload": 1}], batch=False)
    assert redis_client.exists(keys.stream(queue["id"], 0)) == 0
