"""Property tests: no queue or publish body, however malformed, answers 5xx.

Bodies mix valid values with arbitrary JSON of every type (including huge numbers, NUL
characters and lone surrogates sent as `\\u` escapes), random extra fields and non-object
bodies. Every 4xx must carry the contract's error body.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import assert_error
from tests.conftest import OPERATOR_TOKEN, Caller, TenantHandle, make_tenant

CODES = {"VALIDATION_ERROR", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "TOPIC_NOT_FOUND",
         "TOPIC_ALREADY_EXISTS", "TOPIC_NOT_ACTIVE", "CONFLICT", "PAYLOAD_TOO_LARGE",
         "SERIALIZATION_ERROR", "SCHEMA_VALIDATION_ERROR", "QUOTA_EXCEEDED",
         "BROKER_NOT_AVAILABLE", "UNSUPPORTED_MEDIA_TYPE"}

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Any character, surrogates and NUL included.
text = st.text(st.characters(codec=None, categories=None), max_size=30) | st.sampled_from(
    ["", "\x00", "\ud800", "a\udfffb", "😀", "orders", "A" * 250, "kafka", "redis_stream",
     "archived", "json", "none", " ", "../x", "%00"])
scalars = (st.none() | st.booleans() | text
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.sampled_from([0, 1, -1, 64, 65, 2**31, 2**63, 10**30, 60_000, 10 * 1024 * 1024])
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children,
                                                                      max_size=4),
    max_leaves=12,
)


def field_values(*valid: Any) -> st.SearchStrategy[Any]:
    """Mostly plausible values of a field, often anything at all."""
    return st.sampled_from(valid) | json_values if valid else json_values


def body_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An object with any subset of `fields`, random extra fields, or not an object at all."""
    chosen = st.fixed_dictionaries({}, optional=fields)
    extra = st.dictionaries(text, json_values, max_size=2)
    as_object = st.tuples(chosen, extra, st.booleans()).map(
        lambda t: {**t[1], **t[0]} if t[2] else t[0])
    return st.one_of(as_object, as_object, as_object, json_values)


QUEUE_FIELDS = {
    "name": field_values("orders", "a.b_c-1", "x" * 200),
    "display_name": field_values(None, "Orders"),
    "description": field_values(""),
    "topic_type": field_values("redis_stream", "kafka"),
    "partition_count": field_values(1, 2, 64, 65, 0),
    "replication_factor": field_values(1, 3),
    "retention_ms": field_values(60_000, 604_800_000),
    "max_message_bytes": field_values(1, 1_048_576),
    "message_format": field_values("json", "msgpack", "avro", "protobuf"),
    "schema_subject": field_values(None, "s"),
    "schema_definition": field_values(None, {"type": "object"}, {"$schema": 5},
                                      {"type": "nope"}, {"properties": {"a": {"type": []}}}),
    "compression_type": field_values("none", "gzip", "zstd"),
    "encryption": field_values("none", "aes-256-gcm"),
    "is_public": field_values(True, False),
    "allowed_producers": field_values([], ["svc"], [""]),
    "allowed_consumers": field_values([], ["svc"]),
    "status": field_values("active", "paused", "archived"),
}

MESSAGE_FIELDS = {
    "payload": json_values,
    "key": field_values(None, "k", "customer-1"),
    "headers": field_values({}, {"a": "b"}, {"a": 1}),
    "message_id": field_values(None, "m-1", "m-2"),
    "correlation_id": field_values(None, "c"),
    "trace_id": field_values(None, "t"),
    "partition": field_values(None, 0, 1, 3, 4, -1),
    "content_type": field_values(None, "application/json"),
    "ttl_ms": field_values(None, 1, 60_000, 0),
}

TOPICS = ["fuzz-1", "fuzz-4", "fuzz-small", "fuzz-archived"]
TOPIC = field_values(*TOPICS)
MESSAGE = body_of(MESSAGE_FIELDS)


@pytest.fixture(scope="module")
def fuzz_tenant(app) -> TenantHandle:
    tenant = make_tenant(app.test_client())
    tenant.create_queue("fuzz-1")
    tenant.create_queue("fuzz-4", partition_count=4)
    tenant.create_queue("fuzz-small", max_message_bytes=64)
    tenant.create_queue("fuzz-archived", status="archived")
    tenant.create_queue("fuzz-put")
    return tenant


def send(caller: Caller, method: str, path: str, body: Any) -> Any:
    """Send `body` as JSON with every non-ASCII character escaped (so lone surrogates pass)."""
    raw = json.dumps(body, ensure_ascii=True)
    return caller.request(method, path, data=raw, content_type="application/json")


def assert_no_server_error(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        code = response.get_json()["error"]["code"]
        assert code in CODES
        assert_error(response, response.status_code, code)


@FUZZ
@given(body=body_of(QUEUE_FIELDS))
def test_create_queue_never_fails_with_5xx(fuzz_tenant, body):
    if isinstance(body, dict) and body.get("name") == "orders":
        body["name"] = f"orders-{uuid.uuid4().hex[:8]}"
    response = send(fuzz_tenant.admin, "POST", "/queues", body)
    assert_no_server_error(response)
    if response.status_code == 201:
        assert response.get_json()["name"] == body["name"]


@settings(FUZZ, max_examples=100)
@given(body=body_of({k: v for k, v in QUEUE_FIELDS.items() if k != "status"}))
def test_update_queue_never_fails_with_5xx(fuzz_tenant, body):
    response = send(fuzz_tenant.admin, "PUT", "/queues/fuzz-put", body)
    assert_no_server_error(response)
    if response.status_code == 200:
        assert response.get_json()["name"] == "fuzz-put"


@FUZZ
@given(body=body_of({"topic": TOPIC, **MESSAGE_FIELDS}))
def test_publish_never_fails_with_5xx(fuzz_tenant, body):
    response = send(fuzz_tenant.admin, "POST", "/publish", body)
    assert_no_server_error(response)
    if response.status_code in (200, 201):
        assert response.get_json()["topic"] in TOPICS


@FUZZ
@given(body=body_of({"topic": TOPIC,
                     "messages": st.lists(MESSAGE, max_size=6) | json_values,
                     "options": body_of({"compression": field_values("none", "lz4"),
                                         "acks": json_values, "timeout": json_values})}))
def test_publish_batch_never_fails_with_5xx(fuzz_tenant, body):
    response = send(fuzz_tenant.admin, "POST", "/publish/batch", body)
    assert_no_server_error(response)
    if response.status_code in (200, 201):
        answer = response.get_json()
        assert len(answer["message_ids"]) == len(body["messages"])
        assert len(answer["partitions"]) == len(body["messages"])


@settings(FUZZ, max_examples=100)
@given(topic=TOPIC, body=body_of({"messages": st.lists(MESSAGE, max_size=4) | json_values,
                                  **MESSAGE_FIELDS}))
def test_topic_publish_never_fails_with_5xx(fuzz_tenant, topic, body):
    path_topic = topic if isinstance(topic, str) and topic else "fuzz-1"
    encoded = quote(path_topic, safe="", errors="surrogatepass")
    response = send(fuzz_tenant.admin, "POST", f"/topics/{encoded}/publish", body)
    assert_no_server_error(response)


@settings(FUZZ, max_examples=80)
@given(query=st.dictionaries(st.sampled_from(["limit", "cursor", "status", "other"]),
                             text | st.integers().map(str), max_size=4))
def test_list_queries_never_fail_with_5xx(fuzz_tenant, query):
    encoded = "&".join(f"{name}={quote(value, safe='', errors='surrogatepass')}"
                       for name, value in query.items())  # as raw bytes, like a real client
    response = fuzz_tenant.admin.get(f"/queues?{encoded}")
    assert_no_server_error(response)


@settings(FUZZ, max_examples=80)
@given(body=body_of({"name": field_values("svc", "a" * 200), "role": field_values(
    "admin", "producer", "consumer")}))
def test_create_api_key_never_fails_with_5xx(fuzz_tenant, body):
    assert_no_server_error(send(fuzz_tenant.admin, "POST", "/api-keys", body))


@settings(FUZZ, max_examples=80)
@given(body=body_of({"name": field_values("acme", "a" * 63)}),
       quotas=body_of({"quotas": body_of({"topics": field_values(0, 5),
                                          "publish_rate": field_values(0, 5)})}))
def test_operator_bodies_never_fail_with_5xx(app, body, quotas):
    operator = Caller(app.test_client(), OPERATOR_TOKEN)
    assert_no_server_error(send(operator, "POST", "/tenants", body))
    scratch = make_tenant(app.test_client())
    assert_no_server_error(send(operator, "PUT", f"/tenants/{scratch.id}", quotas))
