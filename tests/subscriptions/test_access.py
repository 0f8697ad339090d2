"""Roles, tenant isolation, allowed consumers and public topics."""

from __future__ import annotations

import pytest

from tests.subscriptions.helpers import RedisView, body, subscribe


@pytest.fixture
def broker(settings):
    return RedisView(settings.redis_namespace)


def _calls(sub_id):
    return [
        ("GET", "/subscriptions", None),
        ("GET", f"/subscriptions/{sub_id}", None),
        ("PUT", f"/subscriptions/{sub_id}", {"max_retry_attempts": 2}),
        ("POST", f"/subscriptions/{sub_id}/pause", None),
        ("POST", f"/subscriptions/{sub_id}/resume", None),
        ("POST", f"/subscriptions/{sub_id}/seek", {"to": "latest"}),
        ("GET", f"/subscriptions/{sub_id}/deliveries", None),
    ]


def test_consumer_key_may_do_everything_and_producer_key_nothing(tenant):
    queue = tenant.create_queue()
    consumer, producer = tenant.key("consumer"), tenant.key("producer")
    created = consumer.post("/subscriptions", body(queue["name"]))
    assert created.status_code == 201, created.json
    sub_id = created.json["id"]
    denied = producer.post("/subscriptions", body(queue["name"]))
    assert denied.status_code == 403 and denied.json["error"]["code"] == "FORBIDDEN"
    for method, path, payload in _calls(sub_id):
        assert consumer.request(method, path, json=payload).status_code == 200, (method, path)
        assert producer.request(method, path, json=payload).status_code == 403, (method, path)
    assert producer.delete(f"/subscriptions/{sub_id}").status_code == 403
    assert consumer.delete(f"/subscriptions/{sub_id}").status_code == 204


def test_missing_key_is_unauthorized(tenant, client):
    from tests.conftest import Caller

    assert Caller(client, None).get("/subscriptions").status_code == 401


def test_another_tenants_subscription_does_not_exist(tenant, other_tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    for method, path, payload in [*_calls(sub["id"]),
                                  ("DELETE", f"/subscriptions/{sub['id']}", None)]:
        if path == "/subscriptions":
            continue
        response = other_tenant.admin.request(method, path, json=payload)
        assert response.status_code == 404, (method, path)
        assert response.json["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"
    assert other_tenant.admin.get("/subscriptions").json["items"] == []
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "active"


def test_another_tenants_private_topic_is_not_found(tenant, other_tenant):
    queue = tenant.create_queue()
    for name in (queue["name"], f"{tenant.name}/{queue['name']}"):
        response = other_tenant.admin.post("/subscriptions", body(name))
        assert response.status_code == 404, name
        assert response.json["error"]["code"] == "TOPIC_NOT_FOUND"
    listed = other_tenant.admin.get(f"/subscriptions?topic={tenant.name}/{queue['name']}")
    assert listed.status_code == 200 and listed.json["items"] == []


def test_unknown_ids_are_not_found(tenant):
    for sub_id in ("00000000-0000-0000-0000-000000000000", "x" * 300, "é", "a.b"):
        response = tenant.admin.get(f"/subscriptions/{sub_id}")
        assert response.status_code == 404, sub_id
        assert response.json["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"


def test_public_topic_subscription_belongs_to_the_subscriber(tenant, other_tenant, broker):
    queue = tenant.create_queue(is_public=True)
    public_name = f"{tenant.name}/{queue['name']}"
    sub = subscribe(other_tenant, public_name, consumer_group="billing", consumer_name="b")
    assert sub["topic"] == public_name
    assert sub["dead_letter_queue"] == f"{queue['name']}.deadletter"
    # The owner's group of the same name is a different Redis group.
    own = subscribe(tenant, queue["name"], consumer_group="billing", consumer_name="b")
    groups = broker.groups(queue["id"])
    assert f"{other_tenant.id}:billing" in groups and f"{tenant.id}:billing" in groups

    listed = other_tenant.admin.get(f"/subscriptions?topic={public_name}").json["items"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert [s["id"] for s in tenant.admin.get("/subscriptions").json["items"]] == [own["id"]]
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").status_code == 404
    got = other_tenant.admin.get(f"/subscriptions/{sub['id']}").json
    assert got["topic"] == public_name and got["stats"]["lag"] == 0


def test_allowed_consumers_limit_consumer_keys_only(tenant):
    listed = tenant.key("consumer", name="listed-consumer")
    unlisted = tenant.key("consumer", name="unlisted-consumer")
    queue = tenant.create_queue(allowed_consumers=["listed-consumer"])
    assert listed.post("/subscriptions", body(queue["name"])).status_code == 201
    denied = unlisted.post("/subscriptions", body(queue["name"]))
    assert denied.status_code == 403 and denied.json["error"]["code"] == "FORBIDDEN"
    assert tenant.admin.post("/subscriptions", body(queue["name"])).status_code == 201
