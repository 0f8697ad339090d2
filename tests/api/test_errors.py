"""The contract's error body for every kind of failure, and no 500 for bad input."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from flask import Flask

from api import create_app
from mq.settings import Settings
from tests.api.conftest import assert_error
from tests.conftest import API, Caller, TenantHandle


@pytest.fixture(scope="module")
def small_app(settings: Settings) -> Iterator[Flask]:
    """An app that accepts request bodies of at most 1 KiB."""
    app = create_app(dataclasses.replace(settings, max_request_bytes=1024))
    yield app
    app.extensions["mq"].database.dispose()


@pytest.fixture(scope="module")
def failing_app(settings: Settings) -> Iterator[Flask]:
    """An app with a test-only route that fails unexpectedly."""
    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("secret internal detail in /srv/app/module.py line 42")

    app.add_url_rule(API + "/boom", "boom", boom)
    yield app
    app.extensions["mq"].database.dispose()


def raw_post(tenant: TenantHandle, path: str, data: bytes | str, content_type: str) -> object:
    return tenant.admin.request("POST", path, data=data, content_type=content_type)


# --- unknown paths and methods ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/mq/nope", "/nope", "/api/v1/mq/queues/a/b/c",
                                  "/api/v1/mq/publish/nothing"])
def test_unknown_path_is_404_not_found(client, path):
    assert_error(client.get(path), 404, "NOT_FOUND")


def test_unknown_path_with_a_key_is_404_not_found(tenant):
    assert_error(tenant.admin.get("/no-such-thing"), 404, "NOT_FOUND")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/publish"), ("GET", "/publish"), ("PUT", "/publish/batch"),
    ("PATCH", "/queues"), ("DELETE", "/tenants"), ("POST", "/messages/abc"),
    ("GET", "/queues/x/purge"), ("POST", "/health"), ("PUT", "/api-keys"),
])
def test_wrong_method_is_405(client, method, path):
    response = client.open(API + path, method=method)
    details = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert details == {}
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert method not in allowed
    assert allowed & {"GET", "POST", "PUT", "DELETE"}


# --- request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", "multipart/form-data; boundary=x"])
def test_non_json_body_is_415(tenant, content_type):
    response = raw_post(tenant, "/queues", '{"name": "orders"}', content_type)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert tenant.admin.get("/queues/orders").status_code == 404


def test_body_without_content_type_is_415(tenant):
    response = tenant.admin.request("POST", "/publish", data=b'{"topic": "t", "payload": 1}')
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("body", ['{"name": ', "{'name': 'x'}", "{name: 1}", "nope", "[1, 2",
                                  '{"a": 1} trailing', "\xff\xfe", '{"payload": NaN}',
                                  '{"payload": Infinity}', '{"payload": -Infinity}',
                                  '{"payload": 1e999}'])
def test_invalid_json_is_400(tenant, body):
    response = raw_post(tenant, "/queues", body.encode("latin-1"), "application/json")
    assert_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("depth", [257, 300, 700, 940, 990, 5_000, 100_000])
@pytest.mark.parametrize(("opener", "inner", "closer"), [("[", "1", "]"), ('{"a":', "1", "}"),
                                                         ("[", '"\\u0000"', "]")])
def test_json_nested_too_deeply_is_400(tenant, depth, opener, inner, closer):
    """Deep nesting would exhaust the stack of code that walks the value (a 500)."""
    tenant.create_queue("deep")
    payload = opener * (depth - 1) + inner + closer * (depth - 1)  # the body adds one level
    for path, body in (("/publish", '{"topic": "deep", "payload": ' + payload + "}"),
                       ("/queues", '{"name": "x", "schema_definition": ' + payload + "}")):
        assert_error(raw_post(tenant, path, body, "application/json"), 400, "VALIDATION_ERROR")
    assert tenant.admin.get("/queues/deep").get_json()["stats"]["length"] == 0


def test_json_nested_up_to_the_limit_is_accepted(tenant):
    tenant.create_queue("deep")
    payload: object = "bottom"
    for _ in range(254):  # + {"payload": ...} + the body object = 256 levels
        payload = {"a": [payload]} if isinstance(payload, str) else [payload]
    response = tenant.admin.post("/publish", {"topic": "deep", "payload": payload})
    assert response.status_code == 201, response.get_json()
    got = tenant.admin.get(f"/messages/{response.get_json()['message_id']}")
    assert got.get_json()["payload"] == payload


@pytest.mark.parametrize("body", ["[]", "null", "5", '"text"', "true"])
def test_json_that_is_not_an_object_is_422(tenant, body):
    response = raw_post(tenant, "/queues", body, "application/json")
    assert_error(response, 422, "VALIDATION_ERROR")


def test_empty_json_body_reports_missing_fields(tenant):
    response = raw_post(tenant, "/queues", b"", "application/json")
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert "name" in details


def test_body_over_max_request_bytes_is_413(small_app, settings):
    client = small_app.test_client()
    admin = _tenant_admin(client)
    response = admin.post("/queues", {"name": "big", "description": "x" * 2000})
    details = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert details == {}
    assert admin.post("/queues", {"name": "small"}).status_code == 201


def test_body_over_max_request_bytes_on_publish_is_413(small_app):
    admin = _tenant_admin(small_app.test_client())
    assert admin.post("/queues", {"name": "q"}).status_code == 201
    response = admin.post("/publish", {"topic": "q", "payload": "x" * 5000})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert admin.get("/queues/q").get_json()["stats"]["length"] == 0


def _tenant_admin(client) -> Caller:
    from tests.conftest import make_tenant

    return make_tenant(client).admin


# --- text that cannot be stored --------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    '{"name": "a\\u0000b"}',
    '{"name": "ok", "description": "a\\u0000b"}',
    '{"name": "ok", "description": "\\ud800"}',
    '{"name": "ok", "description": "x\\udfff"}',
    '{"name": "ok", "allowed_producers": ["\\ud83d"]}',
    '{"name": "ok", "schema_definition": {"\\u0000": 1}}',
    '{"name": "ok", "schema_definition": {"description": "\\udc00"}}',
])
def test_nul_and_lone_surrogates_in_queue_bodies_are_422(tenant, raw):
    response = raw_post(tenant, "/queues", raw, "application/json")
    details = assert_error(response, 422, "VALIDATION_ERROR")
    assert details
    assert tenant.admin.get("/queues/ok").status_code == 404


@pytest.mark.parametrize("message", [
    '"payload": "a\\u0000"', '"payload": {"k\\u0000": 1}', '"payload": ["\\ud800"]',
    '"payload": 1, "key": "\\u0000"', '"payload": 1, "headers": {"a": "\\udbff"}',
    '"payload": 1, "message_id": "id\\u0000"',
])
def test_nul_and_lone_surrogates_in_messages_are_422(tenant, message):
    tenant.create_queue("texts")
    response = raw_post(tenant, "/publish", '{"topic": "texts", ' + message + "}",
                        "application/json")
    assert_error(response, 422, "VALIDATION_ERROR")
    batch = '{"topic": "texts", "messages": [{"payload": 1}, {' + message + "}]}"
    assert_error(raw_post(tenant, "/publish/batch", batch, "application/json"), 422,
                 "VALIDATION_ERROR")
    assert tenant.admin.get("/queues/texts").get_json()["stats"]["length"] == 0


def test_surrogate_pairs_and_other_unicode_are_stored(tenant):
    tenant.create_queue("unicode")
    payload = {"emoji": "😀 \u2028 ünïcödé 中文", "rtl": "\u202eabc", "bom": "\ufeff"}
    raw = json.dumps({"topic": "unicode", "payload": payload, "key": "ключ"})  # ascii escapes
    response = raw_post(tenant, "/publish", raw, "application/json")
    assert response.status_code == 201, response.get_json()
    got = tenant.admin.get(f"/messages/{response.get_json()['message_id']}").get_json()
    assert got["payload"] == payload
    assert got["key"] == "ключ"


@pytest.mark.parametrize("path", ["/queues/a%00b", "/messages/a%00b", "/queues/a%00b/purge",
                                  "/queues/%ED%A0%80", "/messages/%ED%A0%80x",
                                  "/api-keys/a%00b"])
def test_nul_in_path_is_a_4xx(tenant, path):
    method = "POST" if path.endswith("purge") else ("DELETE" if "api-keys" in path else "GET")
    response = tenant.admin.request(method, path)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, response.get_json()["error"]["code"])


def test_nul_in_tenant_id_is_a_4xx(operator):
    response = operator.get("/tenants/a%00b")
    assert_error(response, 404, "NOT_FOUND")


@pytest.mark.parametrize("query", ["status=a%00", "cursor=a%00b", "limit=%00", "limit=1e3",
                                   "limit=-1", "limit=0", "limit=1001", "limit=abc"])
def test_bad_query_parameters_are_422(tenant, query):
    response = tenant.admin.get(f"/queues?{query}")
    assert_error(response, 422, "VALIDATION_ERROR")


# --- internal errors -------------------------------------------------------------------------


def test_internal_error_is_500_without_a_traceback(failing_app):
    response = failing_app.test_client().get(API + "/boom")
    details = assert_error(response, 500, "INTERNAL_ERROR")
    assert details == {}
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "secret internal detail", "module.py", 'File "'):
        assert leak not in text
    assert response.headers["Content-Type"] == "application/json"


def test_request_id_is_echoed_and_generated(tenant):
    response = tenant.admin.get("/queues/nope", headers={"X-Request-Id": "abc-123"})
    assert response.get_json()["request_id"] == "abc-123"
    assert response.headers["X-Request-Id"] == "abc-123"
    response = tenant.admin.get("/queues/nope", headers={"X-Request-Id": "bad id !"})
    generated = response.get_json()["request_id"]
    assert generated and generated != "bad id !"
    assert response.headers["X-Request-Id"] == generated
