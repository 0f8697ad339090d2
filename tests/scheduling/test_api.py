"""Delayed, scheduled and recurring publishing through the API (in-process, no scheduler)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from redis import Redis

from mq.settings import Settings
from tests.conftest import REDIS_URL, TenantHandle


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _delay_score(settings: Settings, message_id: str, tenant: TenantHandle) -> float | None:
    """The due time of a message in the delay set (looked up by its record id)."""
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    ns = settings.redis_namespace
    try:
        for member, score in redis.zrange(f"{ns}:delay:{{0}}", 0, -1, withscores=True):
            data = redis.hget(f"{ns}:delay:{{0}}:m", member)
            if data and f'"id\\":\\"{message_id}\\"' in data:
                return score
        return None
    finally:
        redis.close()


def test_delayed_publish_is_scheduled_and_parked(tenant: TenantHandle, settings: Settings
                                                 ) -> None:
    topic = tenant.create_queue()["name"]
    before = datetime.now(UTC)
    response = tenant.admin.post("/publish/delayed",
                                 {"topic": topic, "delay_ms": 60_000, "payload": {"a": 1}})
    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "scheduled"
    deliver_at = _parse(body["deliver_at"])
    assert before + timedelta(seconds=59) < deliver_at < before + timedelta(seconds=62)
    score = _delay_score(settings, body["message_id"], tenant)
    assert score == int(deliver_at.timestamp() * 1000)
    record = tenant.admin.get(f"/messages/{body['message_id']}").json
    assert record["status"] == "scheduled"
    assert record["offset"] is None
    assert _parse(record["scheduled_at"]) == deliver_at


def test_scheduled_publish_at_a_time(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    response = tenant.admin.post("/publish/scheduled",
                                 {"topic": topic, "deliver_at": _iso(at), "payload": "x"})
    assert response.status_code == 202, response.json
    assert _parse(response.json["deliver_at"]) == at
    assert tenant.admin.get(f"/messages/{response.json['message_id']}").json["status"] == \
        "scheduled"


def test_deliver_at_in_the_past_is_accepted(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    past = datetime.now(UTC) - timedelta(hours=1)
    response = tenant.admin.post("/publish/scheduled",
                                 {"topic": topic, "deliver_at": _iso(past), "payload": 1})
    assert response.status_code == 202, response.json
    assert _parse(response.json["deliver_at"]) > past + timedelta(minutes=59)


def test_scheduling_validation(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    far = datetime.now(UTC) + timedelta(days=31)
    cases = [
        ("/publish/delayed", {"topic": topic, "delay_ms": 0, "payload": 1}, "delay_ms"),
        ("/publish/delayed", {"topic": topic, "delay_ms": 2_592_000_001, "payload": 1},
         "delay_ms"),
        ("/publish/delayed", {"topic": topic, "delay_ms": "10", "payload": 1}, "delay_ms"),
        ("/publish/delayed", {"topic": topic, "payload": 1}, "delay_ms"),
        ("/publish/scheduled", {"topic": topic, "deliver_at": _iso(far), "payload": 1},
         "deliver_at"),
        ("/publish/scheduled", {"topic": topic, "deliver_at": "tomorrow", "payload": 1},
         "deliver_at"),
        ("/publish/scheduled", {"topic": topic, "payload": 1}, "cron"),
        ("/publish/scheduled", {"topic": topic, "cron": "* * * * *", "payload": 1,
                                "deliver_at": _iso(datetime.now(UTC))}, "cron"),
        ("/publish/scheduled", {"topic": topic, "cron": "61 * * * *", "payload": 1}, "cron"),
        ("/publish/scheduled", {"topic": topic, "cron": "* * *", "payload": 1}, "cron"),
        ("/publish/scheduled", {"topic": topic, "cron": "* * * * *", "timezone": "Mars/Base",
                                "payload": 1}, "timezone"),
        ("/publish/scheduled", {"topic": topic, "cron": "* * * * *"}, "payload"),
        ("/publish/scheduled", {"topic": topic, "timezone": "UTC", "payload": 1,
                                "deliver_at": _iso(datetime.now(UTC))}, "timezone"),
    ]
    for path, body, field in cases:
        response = tenant.admin.post(path, body)
        assert response.status_code == 422, (body, response.json)
        assert response.json["error"]["code"] == "VALIDATION_ERROR"
        assert field in response.json["error"]["details"], (body, response.json)


def test_unknown_topic_is_404(tenant: TenantHandle) -> None:
    for path, extra in (("/publish/delayed", {"delay_ms": 10}),
                        ("/publish/scheduled", {"cron": "* * * * *"})):
        response = tenant.admin.post(path, {"topic": "nope", "payload": 1, **extra})
        assert response.status_code == 404
        assert response.json["error"]["code"] == "TOPIC_NOT_FOUND"


def test_idempotent_on_message_id(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    message_id = f"m-{uuid.uuid4().hex}"
    body = {"topic": topic, "delay_ms": 60_000, "payload": 1, "message_id": message_id}
    first = tenant.admin.post("/publish/delayed", body)
    again = tenant.admin.post("/publish/delayed", {**body, "delay_ms": 5000})
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}
    published = tenant.admin.post("/publish", {"topic": topic, "payload": 1,
                                               "message_id": message_id})
    assert published.status_code == 200 and published.json["duplicate"] is True


def test_cancel_scheduled_message(tenant: TenantHandle, settings: Settings) -> None:
    topic = tenant.create_queue()["name"]
    message_id = tenant.admin.post("/publish/delayed", {"topic": topic, "delay_ms": 60_000,
                                                        "payload": 1}).json["message_id"]
    assert tenant.admin.delete(f"/messages/{message_id}").status_code == 204
    assert tenant.admin.get(f"/messages/{message_id}").json["status"] == "cancelled"
    assert _delay_score(settings, message_id, tenant) is None
    again = tenant.admin.delete(f"/messages/{message_id}")
    assert again.status_code == 409
    assert again.json["error"]["code"] == "CONFLICT"


def test_cancel_published_message_conflicts(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    message_id = tenant.admin.post("/publish", {"topic": topic, "payload": 1}).json["message_id"]
    response = tenant.admin.delete(f"/messages/{message_id}")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "CONFLICT"
    assert tenant.admin.delete("/messages/unknown-id").status_code == 404


def test_recurring_schedule_lifecycle(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    response = tenant.admin.post("/publish/scheduled", {
        "topic": topic, "cron": "0 9 * * *", "timezone": "Europe/Berlin", "name": "daily",
        "payload": {"report": True}, "headers": {"h": "v"}})
    assert response.status_code == 201, response.json
    schedule_id = response.json["schedule_id"]
    next_run = _parse(response.json["next_run_at"])
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
    found = tenant.admin.get(f"/schedules/{schedule_id}")
    assert found.status_code == 200
    assert found.json["topic"] == topic and found.json["cron"] == "0 9 * * *"
    assert found.json["timezone"] == "Europe/Berlin" and found.json["name"] == "daily"
    assert found.json["message"] == {"payload": {"report": True}, "headers": {"h": "v"}}
    assert found.json["last_run_at"] is None
    assert tenant.admin.delete(f"/schedules/{schedule_id}").status_code == 204
    missing = tenant.admin.get(f"/schedules/{schedule_id}")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "SCHEDULE_NOT_FOUND"
    assert tenant.admin.delete(f"/schedules/{schedule_id}").status_code == 404


def test_six_field_cron_defaults_to_utc(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    response = tenant.admin.post("/publish/scheduled",
                                 {"topic": topic, "cron": "*/1 * * * * *", "payload": 1})
    assert response.status_code == 201, response.json
    next_run = _parse(response.json["next_run_at"])
    assert next_run - datetime.now(UTC) <= timedelta(seconds=1)
    schedule = tenant.admin.get(f"/schedules/{response.json['schedule_id']}").json
    assert schedule["timezone"] == "UTC"
    assert tenant.admin.delete(f"/schedules/{schedule['id']}").status_code == 204


def test_schedules_are_paginated_and_private(tenant: TenantHandle,
                                             other_tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    ids = [tenant.admin.post("/publish/scheduled", {"topic": topic, "cron": "0 0 1 1 *",
                                                    "payload": i}).json["schedule_id"]
           for i in range(3)]
    first = tenant.admin.get("/schedules?limit=2").json
    assert [s["id"] for s in first["items"]] == ids[:2]
    rest = tenant.admin.get(f"/schedules?limit=2&cursor={first['next_cursor']}").json
    assert [s["id"] for s in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    assert other_tenant.admin.get("/schedules").json["items"] == []
    assert other_tenant.admin.get(f"/schedules/{ids[0]}").status_code == 404
    assert other_tenant.admin.delete(f"/schedules/{ids[0]}").status_code == 404


def test_roles(tenant: TenantHandle) -> None:
    topic = tenant.create_queue()["name"]
    producer, consumer = tenant.key("producer"), tenant.key("consumer")
    delayed = {"topic": topic, "delay_ms": 60_000, "payload": 1}
    cron = {"topic": topic, "cron": "0 0 1 1 *", "payload": 1}
    message_id = producer.post("/publish/delayed", delayed).json["message_id"]
    schedule_id = producer.post("/publish/scheduled", cron).json["schedule_id"]
    assert producer.get("/schedules").status_code == 200
    assert consumer.get(f"/messages/{message_id}").status_code == 200
    for response in (consumer.post("/publish/delayed", delayed),
                     consumer.post("/publish/scheduled", cron),
                     consumer.get("/schedules"), consumer.get(f"/schedules/{schedule_id}"),
                     consumer.delete(f"/schedules/{schedule_id}"),
                     consumer.delete(f"/messages/{message_id}")):
        assert response.status_code == 403, response.json
    assert producer.delete(f"/messages/{message_id}").status_code == 204
    assert producer.delete(f"/schedules/{schedule_id}").status_code == 204


def test_allowed_producers_apply(tenant: TenantHandle) -> None:
    topic = tenant.create_queue(allowed_producers=["billing"])["name"]
    outsider = tenant.key("producer")
    for path, extra in (("/publish/delayed", {"delay_ms": 10}),
                        ("/publish/scheduled", {"cron": "* * * * *"})):
        response = outsider.post(path, {"topic": topic, "payload": 1, **extra})
        assert response.status_code == 403, response.json
    assert tenant.key("producer", "billing").post(
        "/publish/delayed", {"topic": topic, "payload": 1, "delay_ms": 10}).status_code == 202
