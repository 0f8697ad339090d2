"""API keys: creation, listing without secrets, unique names, revocation."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import select

from models import ApiKey
from tests.api.conftest import assert_error
from tests.conftest import Caller


def test_create_key_answers_the_contract_fields(tenant, client):
    response = tenant.admin.post("/api-keys", {"name": "billing-svc", "role": "producer"})
    assert response.status_code == 201, response.json
    body = response.json
    assert {"id", "name", "role", "key", "created_at"} <= set(body)
    assert body["name"] == "billing-svc"
    assert body["role"] == "producer"
    assert body["created_at"].endswith("Z")
    producer = Caller(client, body["key"])
    assert producer.get("/queues").status_code == 200


def test_keys_are_stored_hashed(tenant, db):
    body = tenant.admin.post("/api-keys", {"name": "hashed", "role": "consumer"}).json
    row = db.get(ApiKey, body["id"])
    assert row.key_hash == hashlib.sha256(body["key"].encode()).hexdigest()
    stored = [str(v) for v in vars(row).values()]
    assert body["key"] not in stored


def test_list_never_returns_the_keys(tenant):
    created = [tenant.admin.post("/api-keys", {"name": f"k{i}", "role": role}).json
               for i, role in enumerate(("admin", "producer", "consumer"))]
    listing = tenant.admin.get("/api-keys")
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    for key in created:
        assert key["key"] not in text
    items = listing.json["items"]
    assert {i["name"] for i in items} == {"admin", "k0", "k1", "k2"}
    assert {i["name"]: i["role"] for i in items}["k1"] == "producer"
    for item in items:
        assert "key" not in item
        assert {"id", "name", "role", "created_at"} <= set(item)
    assert listing.json["next_cursor"] is None


def test_key_list_pages(tenant):
    for i in range(4):
        tenant.admin.post("/api-keys", {"name": f"page-{i}", "role": "consumer"})
    seen: list[str] = []
    cursor = None
    while True:
        page = tenant.admin.get("/api-keys?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.json
        assert len(page.json["items"]) <= 2
        seen += [i["id"] for i in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 == len(set(seen))


def test_key_names_are_unique_per_tenant(tenant, other_tenant):
    assert tenant.admin.post("/api-keys", {"name": "svc", "role": "producer"}).status_code == 201
    assert_error(tenant.admin.post("/api-keys", {"name": "svc", "role": "consumer"}), 409,
                 "CONFLICT")
    assert_error(tenant.admin.post("/api-keys", {"name": "admin", "role": "admin"}), 409,
                 "CONFLICT")
    again = other_tenant.admin.post("/api-keys", {"name": "svc", "role": "producer"})
    assert again.status_code == 201
    names = [i["name"] for i in tenant.admin.get("/api-keys").json["items"]]
    assert names.count("svc") == 1


@pytest.mark.parametrize("body", [
    {}, {"name": "x"}, {"role": "admin"}, {"name": "x", "role": "owner"},
    {"name": "x", "role": "ADMIN"}, {"name": "", "role": "admin"}, {"name": "a b", "role": "admin"},
    {"name": "a" * 201, "role": "admin"}, {"name": 5, "role": "admin"},
    {"name": "x", "role": None}, {"name": "x", "role": "admin", "extra": 1},
])
def test_invalid_key_bodies_are_422(tenant, body):
    details = assert_error(tenant.admin.post("/api-keys", body), 422, "VALIDATION_ERROR")
    assert details
    assert all(isinstance(v, list) for v in details.values())


def test_deleted_key_answers_401_from_then_on(tenant):
    created = tenant.admin.post("/api-keys", {"name": "temp", "role": "producer"}).json
    temp = Caller(tenant.client, created["key"])
    assert temp.get("/queues").status_code == 200
    response = tenant.admin.delete(f"/api-keys/{created['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(temp.get("/queues"), 401, "UNAUTHORIZED")
    assert_error(temp.post("/publish", {"topic": "x", "payload": 1}), 401, "UNAUTHORIZED")
    assert created["id"] not in [i["id"] for i in tenant.admin.get("/api-keys").json["items"]]
    assert_error(tenant.admin.delete(f"/api-keys/{created['id']}"), 404, "NOT_FOUND")


def test_deleted_key_name_can_be_reused(tenant):
    created = tenant.admin.post("/api-keys", {"name": "reuse", "role": "producer"}).json
    tenant.admin.delete(f"/api-keys/{created['id']}")
    assert tenant.admin.post("/api-keys", {"name": "reuse", "role": "admin"}).status_code == 201


def test_unknown_key_id_is_404_not_found(tenant):
    assert_error(tenant.admin.delete(f"/api-keys/{uuid.uuid4()}"), 404, "NOT_FOUND")


def test_admin_can_revoke_its_own_key(tenant, db):
    [me] = tenant.admin.get("/api-keys").json["items"]
    assert tenant.admin.delete(f"/api-keys/{me['id']}").status_code == 204
    assert_error(tenant.admin.get("/api-keys"), 401, "UNAUTHORIZED")
    assert db.scalar(select(ApiKey).where(ApiKey.id == me["id"])) is None


def test_revocation_reaches_every_api_process(settings, tenant):
    """Another API process that has used (and may cache) the key refuses it right after."""
    from api import create_app

    second = create_app(settings)
    try:
        created = tenant.admin.post("/api-keys", {"name": "elsewhere", "role": "admin"}).json
        elsewhere = Caller(second.test_client(), created["key"])
        assert elsewhere.get("/api-keys").status_code == 200
        tenant.admin.delete(f"/api-keys/{created['id']}")
        assert_error(elsewhere.get("/api-keys"), 401, "UNAUTHORIZED")
    finally:
        second.extensions["mq"].database.dispose()
