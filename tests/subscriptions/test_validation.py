"""Every bound, wrong type and cross-field rule of a subscription body answers 422 with
details naming the field; valid edges are accepted."""

from __future__ import annotations

import pytest

from tests.subscriptions.helpers import HOOK, body

BOUNDS = [
    ("session_timeout_ms", 1_000, 43_200_000),
    ("max_retry_attempts", 0, 100),
    ("retry_delay_ms", 0, 86_400_000),
    ("max_retry_delay_ms", 0, 86_400_000),
    ("max_poll_records", 1, 10_000),
    ("heartbeat_interval_ms", 1, 43_200_000),
]


@pytest.fixture
def topic(tenant):
    return tenant.create_queue("orders")["name"]


def _create(tenant, topic, **fields):
    return tenant.admin.post("/subscriptions", body(topic, **fields))


def _details(response):
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    return response.json["error"]["details"]


@pytest.mark.parametrize(("field_name", "low", "high"), BOUNDS)
def test_integer_bounds(tenant, topic, field_name, low, high):
    extra = {"retry_delay_ms": 0} if field_name == "max_retry_delay_ms" else {}
    for good in (low, high):
        response = _create(tenant, topic, **{field_name: good}, **extra)
        assert response.status_code == 201, (field_name, good, response.json)
        assert response.json[field_name] == good
    for bad in (low - 1, high + 1, 10**40):
        assert field_name in _details(_create(tenant, topic, **{field_name: bad}, **extra))


@pytest.mark.parametrize("value", ["5", 5.5, True, None, [], {}])
def test_integers_refuse_other_types(tenant, topic, value):
    assert "max_retry_attempts" in _details(_create(tenant, topic, max_retry_attempts=value))


@pytest.mark.parametrize(("field_name", "value"), [
    ("subscription_type", "carrier_pigeon"),
    ("offset_reset_policy", "middle"),
    ("status", "archived"),
    ("consumer_group", "has space"),
    ("consumer_group", ""),
    ("consumer_name", "x" * 201),
    ("dead_letter_queue", "bad/name"),
    ("message_filter", ["not", "an", "object"]),
    ("dead_letter_expired", "perhaps"),
    ("topic", "a/b/c"),
    ("topic", ""),
    ("handler_config", "http"),
    ("unknown_field", 1),
])
def test_wrong_values_name_the_field(tenant, topic, field_name, value):
    payload = {**body(topic), field_name: value}
    assert field_name in _details(tenant.admin.post("/subscriptions", payload))


@pytest.mark.parametrize("missing", ["topic", "consumer_group", "handler_config"])
def test_required_fields(tenant, topic, missing):
    payload = body(topic)
    del payload[missing]
    assert missing in _details(tenant.admin.post("/subscriptions", payload))


def test_retry_delay_cap_must_cover_the_first_delay(tenant, topic):
    details = _details(_create(tenant, topic, retry_delay_ms=5000, max_retry_delay_ms=4999))
    assert "max_retry_delay_ms" in details
    # Without an explicit cap, a long first delay lifts the default cap.
    response = _create(tenant, topic, retry_delay_ms=600_000)
    assert response.status_code == 201
    assert response.json["max_retry_delay_ms"] == 600_000


def test_dead_letter_queue_default_and_self_reference(tenant, topic):
    assert _create(tenant, topic).json["dead_letter_queue"] == "orders.deadletter"
    assert _create(tenant, topic, dead_letter_queue="failures").json["dead_letter_queue"] == \
        "failures"
    assert "dead_letter_queue" in _details(_create(tenant, topic, dead_letter_queue="orders"))


def test_dead_letter_default_too_long_asks_for_a_name(tenant):
    long_name = "x" * 195
    tenant.create_queue(long_name)
    assert "dead_letter_queue" in _details(_create(tenant, long_name))
    assert _create(tenant, long_name, dead_letter_queue="short.dl").status_code == 201


def test_message_filter_is_stored_as_given(tenant, topic):
    policy = {"headers.type": ["order.created"], "payload.amount": [{"numeric": [">", 100]}]}
    assert _create(tenant, topic, message_filter=policy).json["message_filter"] == policy
    assert _create(tenant, topic, message_filter=None).json["message_filter"] is None


def test_kafka_consumer_is_not_available(tenant, topic):
    response = _create(tenant, topic, subscription_type="kafka_consumer")
    assert response.status_code == 422
    assert response.json["error"]["code"] == "BROKER_NOT_AVAILABLE"


def test_webhook_needs_an_http_handler_and_redis_consumer_takes_it(tenant, topic):
    response = _create(tenant, topic, subscription_type="redis_consumer")
    assert response.status_code == 201 and response.json["subscription_type"] == "redis_consumer"


@pytest.mark.parametrize(("handler_type", "field_name"),
                         [("function", "function"), ("database", "target")])
def test_function_and_database_handlers_need_their_fields(tenant, topic, handler_type,
                                                          field_name):
    details = _details(_create(tenant, topic, handler_config={"type": handler_type}))
    assert field_name in details["handler_config"]


@pytest.mark.parametrize(("config", "field_name"), [
    ({"url": HOOK}, "type"),
    ({"type": "ftp-push", "url": HOOK}, "type"),
    ({"type": 5, "url": HOOK}, "type"),
    ({"type": "http"}, "url"),
    ({"type": "http", "url": "ftp://files.example.com/x"}, "url"),
    ({"type": "http", "url": "not a url"}, "url"),
    ({"type": "http", "url": "https://"}, "url"),
    ({"type": "http", "url": "https://h.example.com:99999/"}, "url"),
    ({"type": "http", "url": HOOK, "timeout_ms": 0}, "timeout_ms"),
    ({"type": "http", "url": HOOK, "timeout_ms": 300_001}, "timeout_ms"),
    ({"type": "http", "url": HOOK, "timeout_ms": "30"}, "timeout_ms"),
    ({"type": "http", "url": HOOK, "headers": {"X-A": 1}}, "headers"),
    ({"type": "http", "url": HOOK, "headers": ["X-A"]}, "headers"),
    ({"type": "http", "url": HOOK, "headers": {"Bad Name": "v"}}, "headers"),
    ({"type": "http", "url": HOOK, "headers": {"X-A": "a\r\nX-B: b"}}, "headers"),
    ({"type": "http", "url": HOOK, "secret": ""}, "secret"),
    ({"type": "http", "url": HOOK, "secret": 12}, "secret"),
    ({"type": "http", "url": HOOK, "envelope": "maybe"}, "envelope"),
    ({"type": "http", "url": HOOK, "extra": True}, "extra"),
])
def test_http_handler_config(tenant, topic, config, field_name):
    details = _details(_create(tenant, topic, handler_config=config))
    assert field_name in details["handler_config"], details


def test_http_handler_config_edges(tenant, topic):
    config = {"type": "http", "url": "http://hooks.example.com:8080/x?y=1", "timeout_ms": 1,
              "headers": {"X-Empty": ""}, "envelope": False, "schema": {"type": "object"},
              "transform": "payload"}
    response = _create(tenant, topic, handler_config=config)
    assert response.status_code == 201, response.json
    shown = response.json["handler_config"]
    assert shown["timeout_ms"] == 1 and shown["schema"] == {"type": "object"}
    assert shown["transform"] == "payload" and shown["envelope"] is False
    assert _create(tenant, topic, handler_config={
        "type": "http", "url": HOOK, "timeout_ms": 300_000}).status_code == 201


def test_body_must_be_json(tenant, topic):
    response = tenant.admin.post("/subscriptions", data="{", content_type="application/json")
    assert response.status_code == 400
    response = tenant.admin.post("/subscriptions", data="x=1", content_type="text/plain")
    assert response.status_code == 415
