"""Update, pause and resume, secrets, and the control events every change announces."""

from __future__ import annotations

import pytest

from tests.subscriptions.helpers import HOOK, RedisView, subscribe


@pytest.fixture
def broker(settings):
    return RedisView(settings.redis_namespace)


def test_put_is_partial_and_announced(tenant, broker):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    tip = broker.control_tip()
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {
        "max_retry_attempts": 7, "retry_delay_ms": 50, "message_filter": {"key": ["a"]}})
    assert response.status_code == 200, response.json
    updated = response.json
    assert updated["max_retry_attempts"] == 7 and updated["retry_delay_ms"] == 50
    assert updated["message_filter"] == {"key": ["a"]}
    assert updated["max_retry_delay_ms"] == sub["max_retry_delay_ms"]
    assert updated["handler_config"] == sub["handler_config"]
    assert broker.control_events(tip) == [
        {"kind": "subscription", "id": sub["id"], "op": "upsert"}]
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["max_retry_attempts"] == 7


def test_put_accepts_unchanged_immutable_fields_and_refuses_changes(tenant):
    queue = tenant.create_queue()
    sub = subscribe(tenant, queue["name"], consumer_group="g", consumer_name="n")
    same = {"topic": queue["name"], "consumer_group": "g", "consumer_name": "n"}
    assert tenant.admin.put(f"/subscriptions/{sub['id']}", same).status_code == 200
    for field_name, value in (("topic", "other"), ("consumer_group", "h"),
                              ("consumer_name", "m")):
        response = tenant.admin.put(f"/subscriptions/{sub['id']}", {field_name: value})
        assert response.status_code == 422, field_name
        assert field_name in response.json["error"]["details"]


def test_put_checks_rules_against_stored_values(tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"], max_retry_delay_ms=5000)
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {"retry_delay_ms": 6000})
    assert response.status_code == 422
    assert "max_retry_delay_ms" in response.json["error"]["details"]
    response = tenant.admin.put(f"/subscriptions/{sub['id']}",
                                {"subscription_type": "kafka_consumer"})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "BROKER_NOT_AVAILABLE"
    assert tenant.admin.put(f"/subscriptions/{sub['id']}", {"bogus": 1}).status_code == 422


def test_pause_and_resume_change_status_and_are_announced(tenant, broker):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    tip = broker.control_tip()
    paused = tenant.admin.post(f"/subscriptions/{sub['id']}/pause")
    assert paused.status_code == 200, paused.json
    assert paused.json["status"] == "paused"
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "paused"
    resumed = tenant.admin.post(f"/subscriptions/{sub['id']}/resume")
    assert resumed.status_code == 200 and resumed.json["status"] == "active"
    event = {"kind": "subscription", "id": sub["id"], "op": "upsert"}
    assert broker.control_events(tip) == [event, event]


def test_create_and_delete_are_announced(tenant, broker):
    queue = tenant.create_queue()
    tip = broker.control_tip()
    sub = subscribe(tenant, queue["name"])
    tenant.admin.delete(f"/subscriptions/{sub['id']}")
    assert broker.control_events(tip) == [
        {"kind": "subscription", "id": sub["id"], "op": "upsert"},
        {"kind": "subscription", "id": sub["id"], "op": "delete"},
    ]


def test_status_can_be_set_on_create_and_by_put(tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"], status="paused")
    assert sub["status"] == "paused"
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {"status": "active"})
    assert response.json["status"] == "active"


def test_secret_is_write_only(tenant, app):
    config = {"type": "http", "url": HOOK, "secret": "s3cret-value", "envelope": True,
              "headers": {"X-Team": "billing"}, "timeout_ms": 5000}
    sub = subscribe(tenant, tenant.create_queue()["name"], handler_config=config)
    shown = {"type": "http", "url": HOOK, "envelope": True, "headers": {"X-Team": "billing"},
             "timeout_ms": 5000, "secret_set": True}
    assert sub["handler_config"] == shown
    for response in (tenant.admin.get(f"/subscriptions/{sub['id']}"),
                     tenant.admin.get("/subscriptions")):
        assert "s3cret-value" not in response.get_data(as_text=True)
    stored = _stored_config(app, sub["id"])
    assert stored["secret"] == "s3cret-value"


def test_put_back_what_was_read_keeps_the_secret_and_null_removes_it(tenant, app):
    config = {"type": "http", "url": HOOK, "secret": "keep-me"}
    sub = subscribe(tenant, tenant.create_queue()["name"], handler_config=config)
    echoed = dict(sub["handler_config"], timeout_ms=1234)
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {"handler_config": echoed})
    assert response.status_code == 200, response.json
    assert response.json["handler_config"]["secret_set"] is True
    assert response.json["handler_config"]["timeout_ms"] == 1234
    assert _stored_config(app, sub["id"])["secret"] == "keep-me"

    cleared = {"type": "http", "url": HOOK, "secret": None}
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {"handler_config": cleared})
    assert response.json["handler_config"]["secret_set"] is False
    assert "secret" not in _stored_config(app, sub["id"])


def _stored_config(app, subscription_id):
    from models import Subscription

    with app.extensions["mq"].database.session() as session:
        return session.get(Subscription, subscription_id).handler_config
