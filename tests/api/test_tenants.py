"""Operator endpoints: tenants, their admin key and quotas."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from tests.api.conftest import assert_error
from tests.conftest import OPERATOR_TOKEN, Caller, make_tenant


def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_create_tenant_answers_id_name_and_a_working_admin_key(operator, client):
    name = unique_name()
    response = operator.post("/tenants", {"name": name})
    assert response.status_code == 201, response.json
    body = response.json
    assert {"id", "name", "admin_key"} <= set(body)
    assert body["name"] == name
    assert isinstance(body["id"], str) and body["id"]
    admin = Caller(client, body["admin_key"])
    keys = admin.get("/api-keys")
    assert keys.status_code == 200
    [admin_key] = keys.json["items"]
    assert admin_key["name"] == "admin"
    assert admin_key["role"] == "admin"
    assert "key" not in admin_key
    assert body["admin_key"] not in keys.get_data(as_text=True)


def test_tenant_is_listed_and_readable(operator):
    name = unique_name()
    created = operator.post("/tenants", {"name": name}).json
    one = operator.get(f"/tenants/{created['id']}")
    assert one.status_code == 200
    assert one.json["name"] == name
    assert one.json["id"] == created["id"]
    assert "admin_key" not in one.json
    names = _all_tenant_names(operator)
    assert name in names
    assert len(names) == len(set(names))


def _all_tenant_names(operator: Caller, limit: int = 100) -> list[str]:
    """Every tenant's name, walking the pages (the run's other tests make tenants too)."""
    names: list[str] = []
    cursor = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = operator.get(f"/tenants?{query}")
        assert page.status_code == 200, page.json
        assert len(page.json["items"]) <= limit
        names += [t["name"] for t in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            return names


def test_tenant_list_pages_by_name(operator):
    for _ in range(3):
        operator.post("/tenants", {"name": unique_name()})
    names = _all_tenant_names(operator, limit=7)
    assert names == sorted(names)
    assert len(names) == len(set(names)) >= 3
    first = operator.get("/tenants?limit=2").json
    second = operator.get(f"/tenants?limit=2&cursor={first['next_cursor']}").json
    assert [t["name"] for t in first["items"] + second["items"]] == names[:4]
    for tenant in operator.get("/tenants").json["items"]:
        assert "admin_key" not in tenant


def test_duplicate_tenant_name_is_409_conflict(operator):
    name = unique_name()
    assert operator.post("/tenants", {"name": name}).status_code == 201
    assert_error(operator.post("/tenants", {"name": name}), 409, "CONFLICT")


@pytest.mark.parametrize("name", ["", "-abc", "Acme", "a_b", "a.b", "a b", "é", "a" * 64,
                                  "ab\u00e9", 5, None, ["a"], {"a": 1}, True])
def test_invalid_tenant_names_are_422(operator, name):
    details = assert_error(operator.post("/tenants", {"name": name}), 422, "VALIDATION_ERROR")
    assert list(details) == ["name"]
    assert isinstance(details["name"], list)


@pytest.mark.parametrize("name", ["a", "0", "a-", "a" * 63])
def test_valid_tenant_name_edges(operator, name):
    response = operator.post("/tenants", {"name": name})
    if response.status_code == 409:  # another test of the run may have taken this short name
        assert name in _all_tenant_names(operator)
    else:
        assert response.status_code == 201, response.json
        assert response.json["name"] == name


def test_missing_tenant_name_and_unknown_fields_are_422(operator):
    details = assert_error(operator.post("/tenants", {}), 422, "VALIDATION_ERROR")
    assert "name" in details
    details = assert_error(operator.post("/tenants", {"name": unique_name(), "x": 1}), 422,
                           "VALIDATION_ERROR")
    assert "x" in details


def test_unknown_tenant_is_404_not_found(operator):
    assert_error(operator.get(f"/tenants/{uuid.uuid4()}"), 404, "NOT_FOUND")
    assert_error(operator.put(f"/tenants/{uuid.uuid4()}", {"quotas": {"topics": 1}}), 404,
                 "NOT_FOUND")


def test_put_tenant_sets_quotas_and_keeps_the_others(operator, tenant):
    response = operator.put(f"/tenants/{tenant.id}", {"quotas": {"topics": 5, "publish_rate": 0}})
    assert response.status_code == 200, response.json
    assert response.json["quotas"] == {"topics": 5, "publish_rate": 0}
    response = operator.put(f"/tenants/{tenant.id}", {"quotas": {"subscriptions": 7}})
    assert response.json["quotas"] == {"topics": 5, "publish_rate": 0, "subscriptions": 7}
    assert operator.get(f"/tenants/{tenant.id}").json["quotas"] == response.json["quotas"]


@pytest.mark.parametrize("body", [
    {}, {"quotas": None}, {"quotas": 5}, {"quotas": {"topics": -1}},
    {"quotas": {"topics": "5"}}, {"quotas": {"topics": 1.5}}, {"quotas": {"topics": True}},
    {"quotas": {"unknown": 1}}, {"quotas": {"stored_bytes": [1]}},
])
def test_put_tenant_rejects_bad_quotas(operator, tenant, body):
    details = assert_error(operator.put(f"/tenants/{tenant.id}", body), 422, "VALIDATION_ERROR")
    assert "quotas" in details
    assert operator.get(f"/tenants/{tenant.id}").json["quotas"] == {}


def test_tenant_endpoints_need_the_operator_token(client, tenant):
    anonymous = Caller(client, None)
    for call in (lambda c: c.get("/tenants"), lambda c: c.post("/tenants", {"name": "x"}),
                 lambda c: c.get(f"/tenants/{tenant.id}"),
                 lambda c: c.put(f"/tenants/{tenant.id}", {"quotas": {"topics": 1}})):
        assert_error(call(anonymous), 401, "UNAUTHORIZED")
        assert_error(call(Caller(client, "wrong-token")), 401, "UNAUTHORIZED")
        for role in ("admin", "producer", "consumer"):
            caller = tenant.admin if role == "admin" else tenant.key(role)
            assert_error(call(caller), 403, "FORBIDDEN")


def test_topics_quota_limits_queue_creation(operator, tenant):
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"topics": 2}})
    tenant.create_queue("one")
    tenant.create_queue("two")
    response = tenant.admin.post("/queues", {"name": "three"})
    assert assert_error(response, 429, "QUOTA_EXCEEDED") == {"topics": ["at most 2"]}
    assert response.headers["Retry-After"].isdigit()
    assert tenant.admin.get("/queues/three").status_code == 404
    assert tenant.admin.delete("/queues/two").status_code == 204
    tenant.create_queue("three")
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"topics": 0}})
    for n in range(3):
        tenant.create_queue(f"more-{n}")


def test_publish_rate_quota(operator, tenant):
    tenant.create_queue("rated")
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"publish_rate": 3}})
    too_many = tenant.admin.post("/publish/batch", {"topic": "rated",
                                                    "messages": [{"payload": n} for n in range(4)]})
    assert list(assert_error(too_many, 429, "QUOTA_EXCEEDED")) == ["publish_rate"]
    assert too_many.headers["Retry-After"] == "1"
    assert tenant.admin.get("/queues/rated").json["stats"]["length"] == 0
    started = time.time()
    accepted = 0
    refused = None
    for n in range(60):
        response = tenant.admin.post("/publish", {"topic": "rated", "payload": n})
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 201
        accepted += 1
    seconds = int(time.time()) - int(started) + 1
    assert refused is not None
    assert_error(refused, 429, "QUOTA_EXCEEDED")
    assert accepted <= 3 * seconds
    assert tenant.admin.get("/queues/rated").json["stats"]["length"] == accepted
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"publish_rate": 0}})
    unlimited = tenant.admin.post("/publish/batch", {"topic": "rated", "messages": [
        {"payload": n} for n in range(50)]})
    assert unlimited.status_code == 201


def test_settings_give_the_default_quotas(settings, operator):
    from api import create_app

    app = create_app(dataclasses.replace(settings, quota_topics=1))
    try:
        limited = make_tenant(app.test_client())
        limited.create_queue("first")
        assert_error(limited.admin.post("/queues", {"name": "second"}), 429, "QUOTA_EXCEEDED")
        Caller(app.test_client(), OPERATOR_TOKEN).put(f"/tenants/{limited.id}",
                                                       {"quotas": {"topics": 0}})
        assert limited.admin.post("/queues", {"name": "second"}).status_code == 201
    finally:
        app.extensions["mq"].database.dispose()


def test_subscriptions_quota_limits_subscribing(operator, tenant):
    tenant.create_queue("subs")
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"subscriptions": 1}})
    hook = {"type": "http", "url": "https://hooks.example.com/x"}
    first = tenant.admin.post("/subscriptions", {"topic": "subs", "consumer_group": "a",
                                                 "handler_config": hook})
    assert first.status_code == 201, first.json
    second = tenant.admin.post("/subscriptions", {"topic": "subs", "consumer_group": "b",
                                                  "handler_config": hook})
    assert list(assert_error(second, 429, "QUOTA_EXCEEDED")) == ["subscriptions"]
    assert len(tenant.admin.get("/subscriptions").json["items"]) == 1
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"subscriptions": 2}})
    again = tenant.admin.post("/subscriptions", {"topic": "subs", "consumer_group": "b",
                                                 "handler_config": hook})
    assert again.status_code == 201


def test_without_an_operator_token_configured_operator_calls_are_401(settings):
    from api import create_app

    app = create_app(dataclasses.replace(settings, mq_operator_token=None))
    try:
        client = app.test_client()
        for token in ("", "None", "null", OPERATOR_TOKEN):
            caller = Caller(client, token)
            assert_error(caller.post("/tenants", {"name": unique_name()}), 401, "UNAUTHORIZED")
            assert_error(caller.get("/tenants"), 401, "UNAUTHORIZED")
    finally:
        app.extensions["mq"].database.dispose()


def test_stored_bytes_quota_refuses_publishing_until_space_is_freed(operator, tenant):
    tenant.create_queue("a")
    tenant.create_queue("b", partition_count=2)
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"stored_bytes": 30_000}})
    body = {"payload": "x" * 1000}
    refused = None
    for n in range(100):
        response = tenant.admin.post("/publish", {"topic": "ab"[n % 2], **body})
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 201, response.json
    assert refused is not None and 5 <= n <= 40, n  # about 30 kB of streams
    assert list(assert_error(refused, 429, "QUOTA_EXCEEDED")) == ["stored_bytes"]
    batch = tenant.admin.post("/publish/batch", {"topic": "b", "messages": [body]})
    assert_error(batch, 429, "QUOTA_EXCEEDED")
    tenant.admin.post("/queues/a/purge")
    tenant.admin.post("/queues/b/purge")
    assert tenant.admin.post("/publish", {"topic": "a", **body}).status_code == 201


def test_a_publish_run_again_under_a_newer_epoch_counts_once(operator, tenant, app):
    """A publish whose look-ups trusted an old cache epoch is run again (`api.cache`); its
    messages were already counted against the publish rate and must not be counted twice."""
    tenant.create_queue("rerun")
    operator.put(f"/tenants/{tenant.id}", {"quotas": {"publish_rate": 50}})
    services = app.extensions["mq"]
    for _ in range(2):  # the first also loads the quota (under the stale epoch: none yet)
        services.redis.incr(services.cache.epoch_key)  # changed elsewhere: this one is stale
        batch = tenant.admin.post("/publish/batch", {"topic": "rerun", "messages": [
            {"payload": n} for n in range(30)]})
        assert batch.status_code == 201, batch.json
        time.sleep(1.0 - time.time() % 1.0)  # each batch in a second of its own
