"""Topic updates and deletes reach workers through the control stream, and a deleted
topic's subscriptions leave no Redis keys behind."""

from __future__ import annotations

from tests.subscriptions.helpers import RedisView, subscribe


def test_topic_update_and_delete_are_announced(tenant, settings):
    broker = RedisView(settings.redis_namespace)
    queue = tenant.create_queue()
    tip = broker.control_tip()
    assert tenant.admin.put(f"/queues/{queue['name']}", {"status": "paused"}).status_code == 200
    assert tenant.admin.delete(f"/queues/{queue['name']}").status_code == 204
    assert broker.control_events(tip) == [
        {"kind": "topic", "id": queue["id"], "op": "upsert"},
        {"kind": "topic", "id": queue["id"], "op": "delete"},
    ]


def test_topic_delete_removes_its_subscriptions_and_their_keys(tenant, other_tenant, settings):
    broker = RedisView(settings.redis_namespace)
    queue = tenant.create_queue(is_public=True)
    mine = subscribe(tenant, queue["name"])
    theirs = subscribe(other_tenant, f"{tenant.name}/{queue['name']}")
    keys = []
    for sub in (mine, theirs):
        keys += [broker.keys.subscription_counters(sub["id"]), broker.keys.dead_letters(sub["id"])]
        broker.redis.hset(keys[-2], "delivered", 1)
        broker.redis.xadd(keys[-1], {"x": "1"})
    assert tenant.admin.delete(f"/queues/{queue['name']}").status_code == 204
    assert broker.redis.exists(*keys) == 0
    assert tenant.admin.get(f"/subscriptions/{mine['id']}").status_code == 404
    assert other_tenant.admin.get(f"/subscriptions/{theirs['id']}").status_code == 404
    assert other_tenant.admin.get("/subscriptions").json["items"] == []
