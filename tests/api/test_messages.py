"""GET /messages/{id}: the record with its status and per-subscription delivery state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from models import ConsumptionRecord, Subscription
from tests.api.conftest import assert_error

MESSAGE_FIELDS = {"message_id", "topic", "partition", "offset", "key", "headers", "payload",
                  "status", "published_at", "scheduled_at", "expires_at", "correlation_id",
                  "trace_id", "deliveries"}


def test_message_answers_the_contract_fields(tenant):
    tenant.create_queue("read", partition_count=2)
    published = tenant.admin.post("/publish", {
        "topic": "read", "payload": {"a": [1, 2]}, "key": "k", "headers": {"h": "v"},
        "correlation_id": "c-1", "trace_id": "t-1", "partition": 1, "message_id": "read-1",
        "ttl_ms": 3_600_000}).json
    response = tenant.admin.get("/messages/read-1")
    assert response.status_code == 200
    body = response.json
    assert set(body) == MESSAGE_FIELDS
    assert body["message_id"] == "read-1"
    assert body["topic"] == "read"
    assert body["partition"] == 1
    assert body["offset"] == published["offset"]
    assert body["key"] == "k"
    assert body["headers"] == {"h": "v"}
    assert body["payload"] == {"a": [1, 2]}
    assert body["status"] == "published"
    assert body["published_at"] == published["timestamp"]
    assert body["scheduled_at"] is None
    assert body["correlation_id"] == "c-1" and body["trace_id"] == "t-1"
    assert body["deliveries"] == []
    published_at = datetime.fromisoformat(body["published_at"])
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert abs((expires_at - published_at) - timedelta(hours=1)) < timedelta(milliseconds=2)


def test_message_without_optional_fields(tenant):
    tenant.create_queue("bare")
    message_id = tenant.admin.post("/publish", {"topic": "bare", "payload": None}).json[
        "message_id"]
    body = tenant.admin.get(f"/messages/{message_id}").json
    assert body["payload"] is None
    assert body["key"] is None and body["correlation_id"] is None and body["trace_id"] is None
    assert body["headers"] == {}
    assert body["expires_at"] is None


def test_every_role_reads_messages(tenant):
    tenant.create_queue("roles")
    message_id = tenant.admin.post("/publish", {"topic": "roles", "payload": 1}).json[
        "message_id"]
    for role in ("producer", "consumer"):
        assert tenant.key(role).get(f"/messages/{message_id}").json["payload"] == 1


def test_unknown_message_is_404_message_not_found(tenant):
    for message_id in ("nope", "0" * 300, "ü-ñ", "a.b", "%20"):
        details = assert_error(tenant.admin.get(f"/messages/{message_id}"), 404,
                               "MESSAGE_NOT_FOUND")
        assert details == {}


def test_deliveries_per_subscription(tenant, db):
    queue = tenant.create_queue("deliv")
    tenant.admin.post("/publish", {"topic": "deliv", "payload": 1, "message_id": "d-1"})
    subs = [Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group=group,
                         consumer_name="c", subscription_type="redis_consumer",
                         handler_config={"type": "function", "function": "x:y"})
            for group in ("billing", "audit", "fresh")]
    db.add_all(subs)
    db.flush()
    started = datetime.now(UTC).replace(microsecond=0)
    for n, status in enumerate(("failed", "failed", "success")):
        db.add(ConsumptionRecord(tenant_id=tenant.id, subscription_id=subs[0].id,
                                 message_id="d-1", status=status, retry_count=n,
                                 consumer_instance="w-1",
                                 consumed_at=started + timedelta(seconds=n)))
    db.add(ConsumptionRecord(tenant_id=tenant.id, subscription_id=subs[1].id, message_id="d-1",
                             status="dead_letter", consumer_instance="w-1",
                             consumed_at=started))
    db.commit()
    deliveries = {d["consumer_group"]: d for d in
                  tenant.admin.get("/messages/d-1").json["deliveries"]}
    assert set(deliveries) == {"billing", "audit", "fresh"}
    assert deliveries["billing"] == {"subscription_id": subs[0].id, "consumer_group": "billing",
                                     "status": "delivered", "attempts": 3,
                                     "last_attempt_at": (started + timedelta(seconds=2))
                                     .strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    assert deliveries["audit"]["status"] == "dead_letter"
    assert deliveries["audit"]["attempts"] == 1
    assert deliveries["fresh"] == {"subscription_id": subs[2].id, "consumer_group": "fresh",
                                   "status": "pending", "attempts": 0, "last_attempt_at": None}


def test_message_ids_with_slashes_and_odd_characters_read_back(tenant):
    tenant.create_queue("odd")
    for message_id in ("orders/2026/1", "a b", "ü?x=1#frag", "x%2Fy", "..", "trailing/"):
        published = tenant.admin.post("/publish", {"topic": "odd", "payload": message_id,
                                                   "message_id": message_id})
        assert published.status_code == 201, published.json
        response = tenant.admin.get("/messages/" + quote(message_id, safe=""))
        assert response.status_code == 200, (message_id, response.json)
        assert response.json["message_id"] == message_id
        assert response.json["payload"] == message_id
