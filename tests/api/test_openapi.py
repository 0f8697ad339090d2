"""The OpenAPI document describes every endpoint, and what it says is what the API does;
Swagger UI is served."""

from __future__ import annotations

import json
import socket

import pytest
from werkzeug.exceptions import RequestHeaderFieldsTooLarge, RequestURITooLarge

from api.errors import error_response, service_error
from tests.api.conftest import assert_error
from tests.conftest import API
from tests.processes import running_api

ENDPOINTS = [
    ("post", "/tenants"), ("get", "/tenants"), ("get", "/tenants/{tenant_id}"),
    ("put", "/tenants/{tenant_id}"),
    ("post", "/api-keys"), ("get", "/api-keys"), ("delete", "/api-keys/{key_id}"),
    ("post", "/queues"), ("get", "/queues"), ("get", "/queues/{name}"),
    ("put", "/queues/{name}"), ("delete", "/queues/{name}"), ("post", "/queues/{name}/purge"),
    ("post", "/publish"), ("post", "/publish/batch"), ("post", "/topics/{name}/publish"),
    ("get", "/messages/{message_id}"), ("get", "/health"), ("get", "/status"),
]


@pytest.fixture(scope="module")
def spec(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.json


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_is_documented(spec, method, path):
    assert API + path in spec["paths"], sorted(spec["paths"])
    operation = spec["paths"][API + path].get(method)
    assert operation is not None, spec["paths"][API + path]
    assert operation.get("responses")


@pytest.mark.parametrize(("method", "path"), [e for e in ENDPOINTS
                                              if e[1] not in ("/health", "/status")])
def test_authenticated_endpoints_declare_bearer_security(spec, method, path):
    operation = spec["paths"][API + path][method]
    assert operation.get("security", spec["security"]) == [{"bearer": []}]


@pytest.mark.parametrize("path", ["/health", "/status"])
def test_open_endpoints_declare_no_security(spec, path):
    assert spec["paths"][API + path]["get"]["security"] == []


def test_bearer_security_is_declared_once_for_the_document(spec):
    assert spec["security"] == [{"bearer": []}]
    declared = [(path, method) for path, operations in spec["paths"].items()
                for method, operation in operations.items()
                if isinstance(operation, dict) and operation.get("security") not in (None, [])]
    assert declared == []


def test_every_list_answers_a_page(spec):
    pages = {name: schema for name, schema in spec["components"]["schemas"].items()
             if "next_cursor" in schema.get("properties", {})}
    assert len(pages) == 8, sorted(pages)
    for schema in pages.values():
        assert set(schema["properties"]) == {"items", "next_cursor"}


def test_bearer_scheme_and_request_bodies(spec):
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    publish = spec["paths"][API + "/publish"]["post"]
    assert "application/json" in publish["requestBody"]["content"]
    assert "201" in publish["responses"]
    assert "201" in spec["paths"][API + "/queues"]["post"]["responses"]


def test_docs_and_spec_need_no_key(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.get_data(as_text=True).lower()
    assert client.get("/openapi.json").json["info"]["title"]


# --- the document tells the truth (tests/api/test_schemathesis.py checks the answers) ------


def _operations(spec):
    return [(path, method, operation) for path, operations in spec["paths"].items()
            for method, operation in operations.items() if isinstance(operation, dict)]


def _resolved(spec, response):
    name = response.get("$ref", "").rpartition("/")[2]
    return spec["components"]["responses"][name] if name else response


def test_every_error_response_is_the_contract_error_body(spec):
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "request_id"}
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "details"}
    for path, method, operation in _operations(spec):
        assert "default" not in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (path, status) != (API + "/health", "503"):  # unhealthy
                content = _resolved(spec, response)["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, \
                    (method, path, status)


def test_operations_document_the_errors_they_can_answer(spec):
    for path, method, operation in _operations(spec):
        statuses = set(operation["responses"])
        assert {"500", "503"} <= statuses, (method, path)
        if operation.get("security") != []:
            assert {"401", "403"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= statuses, (method, path)
    publish = spec["paths"][API + "/publish"]["post"]["responses"]
    assert {"404", "409", "429"} <= set(publish)
    assert "409" in spec["paths"][API + "/queues"]["post"]["responses"]


def test_publishing_to_a_topic_documents_both_answers(spec):
    responses = spec["paths"][API + "/topics/{name}/publish"]["post"]["responses"]
    for status in ("200", "201"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"oneOf": [{"$ref": "#/components/schemas/PublishOut"},
                                    {"$ref": "#/components/schemas/BatchOut"}]}
    assert "200" in spec["paths"][API + "/publish/batch"]["post"]["responses"]


def test_handler_config_has_one_variant_per_handler_type(spec):
    from handlers.registry import HANDLER_TYPES

    variants = spec["components"]["schemas"]["HandlerConfig"]["oneOf"]
    assert sorted(v["properties"]["type"]["enum"][0] for v in variants) == sorted(HANDLER_TYPES)
    assert all("type" in v["required"] for v in variants)
    create = spec["components"]["schemas"]["SubscriptionFields"]["properties"]
    assert create["handler_config"]["allOf"] == [{"$ref": "#/components/schemas/HandlerConfig"}]


def test_objects_are_never_bounded_with_string_keywords(spec):
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert not {"minLength", "maxLength"} & set(node), node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    headers = spec["components"]["schemas"]["MessageFields"]["properties"]["headers"]
    assert headers["maxProperties"] == 100


def test_kafka_values_document_their_refusal(spec):
    fields = spec["components"]["schemas"]
    assert "422" in fields["TopicFields"]["properties"]["topic_type"]["description"]
    assert "422" in fields["SubscriptionFields"]["properties"]["subscription_type"]["description"]


# --- answers the document promises -------------------------------------------------------


def test_an_update_without_a_body_is_refused(tenant):
    queue = tenant.create_queue()["name"]
    subscription = tenant.admin.post("/subscriptions", {
        "topic": queue, "consumer_group": "g",
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}}).json["id"]
    for path in (f"/queues/{queue}", f"/subscriptions/{subscription}"):
        for headers in ({}, {"Content-Type": "application/json"}):
            response = tenant.admin.request("PUT", path, headers=headers)
            assert_error(response, 422, "VALIDATION_ERROR")
        assert tenant.admin.put(path, {}).status_code == 200  # an empty update is one


@pytest.mark.parametrize(("error", "status", "code"), [
    (RequestURITooLarge, 414, "URI_TOO_LONG"),
    (RequestHeaderFieldsTooLarge, 431, "HEADER_FIELDS_TOO_LARGE"),
])
def test_werkzeug_limit_errors_answer_the_error_body(app, error, status, code):
    with app.test_request_context("/"):
        app.preprocess_request()  # the request id
        assert_error(error_response(service_error(error())), status, code)


def _raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is; the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_requests_gunicorn_refuses_itself_answer_the_error_body(settings, tmp_path):
    """`mq api` serves through gunicorn, which refuses an over-long request line or header
    and unparsable requests before the app sees them."""
    environ = {**settings.as_environ(), "WEB_CONCURRENCY": "1",
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with running_api(environ) as url:
        port = int(url.rpartition(":")[2])
        for request, status, code in [
            (b"GET " + API.encode() + b"/queues?q=" + b"a" * 9000 + b" HTTP/1.1\r\n"
             b"Host: t\r\n\r\n", 414, "URI_TOO_LONG"),
            (b"GET " + API.encode() + b"/health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000
             + b"\r\n\r\n", 431, "HEADER_FIELDS_TOO_LARGE"),
            (b"NOT HTTP\r\n\r\n", 400, "VALIDATION_ERROR"),
        ]:
            answer_status, headers, body = _raw_exchange(port, request)
            assert (answer_status, headers["content-type"]) == (status, "application/json")
            error = json.loads(body)
            assert set(error) == {"error", "request_id"}
            assert set(error["error"]) == {"code", "message", "details"}
            assert error["error"]["code"] == code


def test_a_scheduled_publish_documents_deliver_at_or_cron(spec):
    body = spec["components"]["schemas"]["ScheduledBody"]
    assert [variant["required"] for variant in body["oneOf"]] == [["deliver_at"], ["cron"]]


def test_seek_and_redrive_document_their_one_of(spec):
    schemas = spec["components"]["schemas"]
    assert [v["required"] for v in schemas["SeekBody"]["oneOf"]] == [
        ["to"], ["offset"], ["timestamp"]]
    assert schemas["DeadLetterRedriveBody"]["not"] == {"required": ["ids", "max_messages"]}
