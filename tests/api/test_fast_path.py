"""The publish fast path (`api.fast_path`) answers exactly as the Flask views would.

Every request is sent twice: through the app (fast path in front) and straight to the Flask
app behind it. A `before_request` hook counts what Flask served, which tells whether the fast
path answered or handed the request on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from api import create_app
from mq.settings import Settings
from tests.conftest import API, OPERATOR_TOKEN, TenantHandle, make_tenant


@pytest.fixture(scope="module")
def fast_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["FLASK_SERVED"] = 0

    def count() -> None:
        app.config["FLASK_SERVED"] += 1

    app.before_request_funcs.setdefault(None, []).insert(0, count)  # before any refusal
    yield app


@pytest.fixture
def both(fast_app: Flask) -> tuple[TenantHandle, Client]:
    """A tenant on the app, and a client of the Flask app behind the fast path."""
    return make_tenant(fast_app.test_client()), Client(fast_app.wsgi_app.flask,
                                                       fast_app.response_class)


def send(client: Any, path: str, token: str | None, body: Any = None, *,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if raw is not None:
        sent.setdefault("Content-Type", "application/json")
        return client.post(API + path, data=raw, headers=sent)
    return client.post(API + path, json=body, headers=sent)


def served_by_flask(app: Flask, call: Any) -> tuple[Any, bool]:
    before = app.config["FLASK_SERVED"]
    response = call()
    return response, app.config["FLASK_SERVED"] > before


def compare(fast_app: Flask, both: tuple[TenantHandle, Client], path: str,
            body: Any = None, *, token: str | None = "admin", fast: bool = True,
            **kwargs: Any) -> tuple[Any, Any]:
    """Send the request both ways; the status and error body must be the same, and the fast
    path must have answered it itself iff `fast`."""
    tenant, flask_client = both
    key = tenant.admin.token if token == "admin" else token
    response, by_flask = served_by_flask(
        fast_app, lambda: send(tenant.client, path, key, body, **kwargs))
    assert by_flask is not fast, (response.status_code, response.get_json())
    reference = send(flask_client, path, key, body, **kwargs)
    assert response.status_code == reference.status_code, (response.json, reference.json)
    assert response.headers["Content-Type"] == reference.headers["Content-Type"]
    assert response.headers["X-Request-Id"]
    if response.status_code >= 400:
        assert response.json["error"] == reference.json["error"]
        assert response.headers.get("Retry-After") == reference.headers.get("Retry-After")
    else:
        assert set(response.json) == set(reference.json)
    return response, reference


def test_ordinary_publishes_are_answered_by_the_fast_path(fast_app, both):
    tenant, _ = both
    tenant.create_queue("orders", partition_count=2)
    tenant.create_queue("eu.west_1-orders")
    single, reference = compare(fast_app, both, "/publish",
                                {"topic": "orders", "payload": {"n": 1}, "key": "k"})
    assert single.status_code == 201 and single.json["topic"] == "orders"
    assert single.json["partition"] == reference.json["partition"]  # same key, same partition
    batch, _ = compare(fast_app, both, "/publish/batch",
                       {"topic": "orders", "messages": [{"payload": i} for i in range(3)]})
    assert batch.status_code == 201 and len(batch.json["message_ids"]) == 3
    to_topic, _ = compare(fast_app, both, "/topics/eu.west_1-orders/publish", {"payload": "x"})
    assert to_topic.json["topic"] == "eu.west_1-orders"
    topic_batch, _ = compare(fast_app, both, "/topics/orders/publish",
                             {"messages": [{"payload": 1}, {"payload": 2}]})
    assert len(topic_batch.json["message_ids"]) == 2


def test_duplicates_answer_the_original(fast_app, both):
    tenant, flask_client = both
    tenant.create_queue("orders")
    body = {"topic": "orders", "payload": 1, "message_id": f"m-{uuid.uuid4()}"}
    first = send(flask_client, "/publish", tenant.admin.token, body)
    again, by_flask = served_by_flask(
        fast_app, lambda: send(tenant.client, "/publish", tenant.admin.token, body))
    assert not by_flask
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == {**first.json, "duplicate": True}


def test_refusals_are_worded_as_the_views_word_them(fast_app, both):
    tenant, _ = both
    tenant.create_queue("orders")
    consumer = tenant.key("consumer").token
    compare(fast_app, both, "/publish", {"topic": "nowhere", "payload": 1})  # 404
    compare(fast_app, both, "/topics/z%C3%BCrich/publish", {"payload": 1})
    compare(fast_app, both, "/publish", {"topic": "orders", "payload": 1}, token=None)  # 401
    compare(fast_app, both, "/publish", {"topic": "orders", "payload": 1}, token="nope")
    compare(fast_app, both, "/publish", {"topic": "orders", "payload": 1}, token=consumer)
    compare(fast_app, both, "/publish", raw=b'{"topic": "orders", "payload": NaN}')  # 400
    compare(fast_app, both, "/publish", raw=b'{"topic": "orders", "payload": "\\u0000"}')
    compare(fast_app, both, "/topics/orders/publish", {"key": "k"})  # payload is required


def test_unusual_requests_go_to_flask(fast_app, both):
    """Bodies marshmallow words a refusal for, other media types, query strings."""
    tenant, _ = both
    tenant.create_queue("orders")
    compare(fast_app, both, "/publish", {"topic": "orders", "payload": 1, "partition": True},
            fast=False)
    compare(fast_app, both, "/publish", {"payload": 1}, fast=False)
    compare(fast_app, both, "/publish", {"topic": "orders", "payload": 1, "extra": 1},
            fast=False)
    compare(fast_app, both, "/publish", [1, 2], fast=False)
    compare(fast_app, both, "/publish", raw=b'{"topic": "orders", "payload": 1}',
            headers={"Content-Type": "text/plain"}, fast=False)
    compare(fast_app, both, "/publish?x=1", {"topic": "orders", "payload": 1}, fast=False)
    compare(fast_app, both, "/topics/a%2Fb/publish", {"payload": 1}, fast=False)


def test_request_id_and_metrics(fast_app, both):
    tenant, _ = both
    tenant.create_queue("orders")
    response = send(tenant.client, "/publish", tenant.admin.token,
                    {"topic": "orders", "payload": 1}, headers={"X-Request-Id": "req-42"})
    assert response.headers["X-Request-Id"] == "req-42"
    refused = send(tenant.client, "/publish", "nope", {"topic": "orders", "payload": 1},
                   headers={"X-Request-Id": "req-43"})
    assert refused.json["request_id"] == "req-43"
    text = fast_app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).get_data(as_text=True)
    assert f'route="{API}/publish",status="201"' in text
    assert f'route="{API}/publish",status="401"' in text
    assert "mq_publish_duration_seconds_count{" in text
