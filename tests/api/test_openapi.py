"""The OpenAPI document describes every foundation endpoint; Swagger UI is served."""

from __future__ import annotations

import pytest

from tests.conftest import API

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
