"""W3C trace context at publish time: stored with the message, in its headers, where every
delivery attempt finds it (`mq.tracing`)."""

from __future__ import annotations

import pytest

from mq.settings import Settings
from mq.tracing import TraceContext, Tracing, with_trace

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def stored(tenant, message_id: str) -> dict:
    response = tenant.admin.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.json
    return response.json


@pytest.mark.parametrize("path", ["/publish", "/publish?via=flask"])
def test_a_publish_stores_the_request_trace_context(tenant, path: str) -> None:
    """Both the fast path and Flask's own dispatch (a query string) take the headers."""
    queue = tenant.create_queue()
    response = tenant.admin.post(path, {"topic": queue["name"], "payload": 1,
                                        "headers": {"app": "shop"}},
                                 headers={"traceparent": PARENT, "tracestate": STATE})
    assert response.status_code == 201, response.json
    message = stored(tenant, response.json["message_id"])
    assert message["headers"] == {"app": "shop", "traceparent": PARENT, "tracestate": STATE}
    assert message["trace_id"] == TRACE_ID


def test_a_given_trace_id_is_kept(tenant) -> None:
    queue = tenant.create_queue()
    response = tenant.admin.post("/publish", {"topic": queue["name"], "payload": 1,
                                              "trace_id": "mine"},
                                 headers={"traceparent": PARENT})
    message = stored(tenant, response.json["message_id"])
    assert message["trace_id"] == "mine"
    assert message["headers"] == {"traceparent": PARENT}


@pytest.mark.parametrize("bad", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    f"00-{TRACE_ID}-0000000000000000-01",  # zero parent id
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # forbidden version
    f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper case
    f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has no more fields
    "garbage",
])
def test_an_invalid_traceparent_is_ignored(tenant, bad: str) -> None:
    queue = tenant.create_queue()
    response = tenant.admin.post("/publish", {"topic": queue["name"], "payload": 1},
                                 headers={"traceparent": bad, "tracestate": STATE})
    assert response.status_code == 201, response.json
    message = stored(tenant, response.json["message_id"])
    assert message["headers"] == {}
    assert message["trace_id"] is None


def test_a_batch_message_keeps_its_own_context_and_the_others_take_the_request_s(
        tenant) -> None:
    queue = tenant.create_queue()
    response = tenant.admin.post("/publish/batch", {"topic": queue["name"], "messages": [
        {"payload": 0, "headers": {"traceparent": OTHER, "tracestate": "a=1"}},
        {"payload": 1},
        {"payload": 2, "headers": {"traceparent": "not valid", "k": "v"}},
    ]}, headers={"traceparent": PARENT})
    assert response.status_code == 201, response.json
    own, plain, invalid = (stored(tenant, i) for i in response.json["message_ids"])
    assert own["headers"] == {"traceparent": OTHER, "tracestate": "a=1"}
    assert own["trace_id"] == OTHER[3:35]
    assert plain["headers"] == {"traceparent": PARENT}
    assert invalid["headers"] == {"traceparent": PARENT, "k": "v"}
    assert plain["trace_id"] == invalid["trace_id"] == TRACE_ID


def test_a_delayed_message_carries_the_context(tenant) -> None:
    queue = tenant.create_queue()
    response = tenant.admin.post("/publish/delayed", {"topic": queue["name"], "payload": 1,
                                                      "delay_ms": 60_000},
                                 headers={"traceparent": PARENT})
    assert response.status_code == 202, response.json
    assert stored(tenant, response.json["message_id"])["headers"] == {"traceparent": PARENT}


def test_parsing_follows_w3c() -> None:
    later = f"01-{TRACE_ID}-00f067aa0ba902b7-01-future"
    assert TraceContext.parse(later) == TraceContext(later)  # a later version may add fields
    assert TraceContext.parse(PARENT, "x" * 600) == TraceContext(PARENT)  # oversized state
    assert TraceContext.parse(None) is None
    assert with_trace({"payload": 1}, None) == {"payload": 1}
    message = {"payload": 1, "headers": {"traceparent": OTHER}}
    replaced = with_trace(message, TraceContext(PARENT), replace=True)
    assert replaced["headers"] == {"traceparent": PARENT}
    assert message == {"payload": 1, "headers": {"traceparent": OTHER}}  # not changed


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_is_on_only_when_the_standard_variables_ask(environ: dict, on: bool) -> None:
    settings = Settings.from_env(environ)
    assert settings.tracing_enabled is on
    tracing = Tracing.configure(settings, "mq-test")
    assert tracing.on is on
    tracing.shutdown()
