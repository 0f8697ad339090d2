"""Tenant isolation: another tenant's objects answer exactly as if they did not exist."""

from __future__ import annotations

from tests.api.conftest import assert_error


def _first_tenant_objects(tenant) -> dict:
    queue = tenant.create_queue("orders", partition_count=2, is_public=True)
    published = tenant.admin.post("/publish", {"topic": "orders", "payload": {"secret": 1},
                                               "message_id": "first-1"}).json
    key = tenant.admin.post("/api-keys", {"name": "svc", "role": "producer"}).json
    return {"queue": queue, "published": published, "key": key}


def test_other_tenant_gets_404_on_everything_of_the_first(tenant, other_tenant, redis_client,
                                                          keys):
    first = _first_tenant_objects(tenant)
    intruder = other_tenant.admin
    for response in (intruder.get("/queues/orders"),
                     intruder.put("/queues/orders", {"description": "mine"}),
                     intruder.post("/queues/orders/purge"),
                     intruder.delete("/queues/orders"),
                     intruder.post("/publish", {"topic": "orders", "payload": 1}),
                     intruder.post("/publish/batch", {"topic": "orders",
                                                      "messages": [{"payload": 1}]}),
                     intruder.post("/topics/orders/publish", {"payload": 1}),
                     intruder.post("/topics/orders/publish", {"messages": [{"payload": 1}]}),
                     intruder.post("/publish", {"topic": f"{tenant.name}/orders",
                                                "payload": 1})):
        assert_error(response, 404, "TOPIC_NOT_FOUND")
    assert_error(intruder.get("/messages/first-1"), 404, "MESSAGE_NOT_FOUND")
    assert_error(intruder.get(f"/messages/{first['published']['message_id']}"), 404,
                 "MESSAGE_NOT_FOUND")
    assert_error(intruder.delete(f"/api-keys/{first['key']['id']}"), 404, "NOT_FOUND")
    producer = other_tenant.key("producer")
    assert_error(producer.post("/publish", {"topic": "orders", "payload": 1}), 404,
                 "TOPIC_NOT_FOUND")
    assert_error(producer.get("/queues/orders"), 404, "TOPIC_NOT_FOUND")

    # The first tenant's objects are untouched.
    mine = tenant.admin.get("/queues/orders").json
    assert mine["description"] == ""
    assert mine["stats"]["length"] == 1
    assert redis_client.xlen(keys.stream(first["queue"]["id"], 0)) + redis_client.xlen(
        keys.stream(first["queue"]["id"], 1)) == 1
    assert tenant.admin.get("/messages/first-1").json["payload"] == {"secret": 1}
    assert first["key"]["id"] in [k["id"] for k in tenant.admin.get("/api-keys").json["items"]]


def test_lists_never_show_the_other_tenants_objects(tenant, other_tenant):
    first = _first_tenant_objects(tenant)
    other_tenant.create_queue("theirs")
    queues = other_tenant.admin.get("/queues").json["items"]
    assert [q["name"] for q in queues] == ["theirs"]
    for status in ("active", "paused", "archived"):
        listed = other_tenant.admin.get(f"/queues?status={status}").json["items"]
        assert first["queue"]["id"] not in [q["id"] for q in listed]
    api_keys = other_tenant.admin.get("/api-keys").json["items"]
    assert [k["name"] for k in api_keys] == ["admin"]
    assert [q["name"] for q in tenant.admin.get("/queues").json["items"]] == ["orders"]


def test_same_names_live_side_by_side(tenant, other_tenant, redis_client, keys):
    mine = tenant.create_queue("shared-name")
    theirs = other_tenant.create_queue("shared-name", partition_count=3)
    assert mine["id"] != theirs["id"]
    tenant.admin.post("/publish", {"topic": "shared-name", "payload": "mine"})
    other_tenant.admin.post("/publish", {"topic": "shared-name", "payload": "theirs",
                                         "partition": 0})
    assert tenant.admin.get("/queues/shared-name").json["partition_count"] == 1
    assert redis_client.xlen(keys.stream(mine["id"], 0)) == 1
    assert redis_client.xlen(keys.stream(theirs["id"], 0)) == 1
    assert other_tenant.admin.post("/queues/shared-name/purge").json == {"purged": 1}
    assert tenant.admin.get("/queues/shared-name").json["stats"]["length"] == 1
    assert other_tenant.admin.delete("/queues/shared-name").status_code == 204
    assert redis_client.xlen(keys.stream(mine["id"], 0)) == 1
    assert tenant.admin.get("/queues/shared-name").status_code == 200


def test_cursor_of_one_tenant_does_not_reveal_another(tenant, other_tenant):
    for name in ("a", "b", "c"):
        tenant.create_queue(name)
    other_tenant.create_queue("z")
    cursor = tenant.admin.get("/queues?limit=1").json["next_cursor"]
    page = other_tenant.admin.get(f"/queues?cursor={cursor}").json
    assert [q["name"] for q in page["items"]] == ["z"]
