"""Random subscription bodies never get a server error: every answer is 2xx or 4xx."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.subscriptions.helpers import HOOK

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


def near(*good: Any) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes anything."""
    return st.sampled_from(good) | json_values


handler_configs = st.fixed_dictionaries(
    {"type": near("http", "function", "database", "kafka")},
    optional={
        "url": near(HOOK, "http://127.0.0.1/x", "ftp://x", "https://", "http://[::1"),
        "headers": near({}, {"X-A": "b"}, {"": "x"}, {"X": 1}),
        "timeout_ms": near(1, 30_000, 300_000, 0, -5, 10**20),
        "secret": near("s", "", None),
        "envelope": near(True, False),
        "schema": json_values,
        "transform": json_values,
        "secret_set": json_values,
    },
) | json_values

fields_of_a_body = st.fixed_dictionaries(
    {},
    optional={
        "topic": near("orders", "orders.deadletter", "nobody/orders", "a/b", "", "x" * 300),
        "consumer_group": near("billing", "ops", "", "bad name", "g:1"),
        "consumer_name": near("one", "two", ""),
        "subscription_type": near("webhook", "redis_consumer", "kafka_consumer"),
        "offset_reset_policy": near("latest", "earliest"),
        "max_poll_records": near(1, 500, 10_001),
        "session_timeout_ms": near(999, 1_000, 43_200_001),
        "heartbeat_interval_ms": near(0, 3_000),
        "handler_config": handler_configs,
        "message_filter": json_values,
        "dead_letter_queue": near("orders.dl", "orders", "x" * 201),
        "dead_letter_expired": near(True, False),
        "max_retry_attempts": near(0, 3, 100, 101),
        "retry_delay_ms": near(0, 1_000, 86_400_001),
        "max_retry_delay_ms": near(0, 300_000, 2**31),
        "status": near("active", "paused"),
    },
)
VALID = {"topic": "orders", "consumer_group": "billing",
         "handler_config": {"type": "http", "url": HOOK}}


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with up to two fields replaced, so that deeper checks run too."""
    changes = draw(fields_of_a_body)
    name = draw(st.uuids().map(str))
    return {**VALID, "consumer_name": name, **dict(list(changes.items())[:2])}


bodies = near_valid() | fields_of_a_body | json_values


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=bodies)
def test_create_never_answers_5xx(tenant_with_orders, payload):
    response = tenant_with_orders.admin.post("/subscriptions", payload)
    event(f"status {response.status_code}")
    assert response.status_code < 500, (payload, response.json)
    if response.status_code >= 400:
        assert response.json["error"]["code"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=bodies)
def test_update_never_answers_5xx(tenant_with_orders, payload):
    sub_id = tenant_with_orders.subscription_id
    response = tenant_with_orders.admin.put(f"/subscriptions/{sub_id}", payload)
    assert response.status_code < 500, (payload, response.json)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=st.fixed_dictionaries({}, optional={
    "to": near("earliest", "latest"), "offset": near("0-0", "1-1", "abc", "-1"),
    "partition": near(0, 1, -1), "timestamp": near("2026-01-01T00:00:00Z", "not a time"),
}) | json_values)
def test_seek_never_answers_5xx(tenant_with_orders, payload):
    sub_id = tenant_with_orders.subscription_id
    response = tenant_with_orders.admin.post(f"/subscriptions/{sub_id}/seek", payload)
    assert response.status_code < 500, (payload, response.json)
