"""Message ids are unique per tenant for 24 h, on partitioned records: a duplicate within the
window answers the original, the same id after it publishes a new message (race-free), and
look-ups find records across a day's partition boundary. The clock is moved by moving the
stored times back, never by sleeping."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, time, timedelta
from time import sleep
from typing import Any

from sqlalchemy import text

from models import Subscription
from models.base import utcnow
from models.partitions import ensure_partitions
from tests.conftest import Caller, TenantHandle
from tests.publishing.test_group_writer import run_threads


def age_message(db: Any, tenant_id: str, message_id: str, by: timedelta, *,
                record_too: bool = False) -> None:
    """Move a message's key (and, with `record_too`, its records and deliveries) `by` into
    the past, as if that much time had gone by since it was published."""
    ensure_partitions(db.connection(), utcnow() - by - timedelta(days=1),
                      days_ahead=1)  # the days it lands in
    params = {"t": tenant_id, "m": message_id, "by": by}
    db.execute(text("UPDATE idempotency_keys SET published_at = published_at - :by "
                    "WHERE tenant_id = :t AND message_id = :m"), params)
    if record_too:
        db.execute(text("UPDATE message_records SET published_at = published_at - :by "
                        "WHERE tenant_id = :t AND message_id = :m"), params)
        db.execute(text("UPDATE consumption_records SET consumed_at = consumed_at - :by "
                        "WHERE tenant_id = :t AND message_id = :m"), params)
    db.commit()


def publish(caller: Caller, message_id: str, payload: Any) -> Any:
    return caller.post("/publish", {"topic": "window", "message_id": message_id,
                                    "payload": payload})


def test_a_duplicate_within_24_h_answers_the_original_and_after_24_h_publishes_anew(
        tenant: TenantHandle, db) -> None:
    tenant.create_queue("window")
    first = publish(tenant.admin, "order-1", 1)
    assert first.status_code == 201
    age_message(db, tenant.id, "order-1", timedelta(hours=23, minutes=59))
    again = publish(tenant.admin, "order-1", 2)
    assert again.status_code == 200 and again.json["duplicate"] is True
    assert again.json["offset"] == first.json["offset"]

    age_message(db, tenant.id, "order-1", timedelta(minutes=2))  # now 24 h 1 min old
    new = publish(tenant.admin, "order-1", 3)
    assert new.status_code == 201, new.json
    assert new.json["duplicate"] is False and new.json["offset"] != first.json["offset"]
    assert tenant.admin.get("/messages/order-1").json["payload"] == 3  # the newest record
    repeat = publish(tenant.admin, "order-1", 4)  # the new message holds the id for 24 h
    assert repeat.status_code == 200 and repeat.json["offset"] == new.json["offset"]
    stored = db.execute(text("SELECT count(*) FROM message_records WHERE tenant_id = :t AND "
                             "message_id = 'order-1'"), {"t": tenant.id}).scalar()
    assert stored == 2


def test_batches_apply_the_window_message_by_message(tenant: TenantHandle, db) -> None:
    tenant.create_queue("window")
    ids = [f"b-{i}" for i in range(3)]
    batch = {"topic": "window", "messages": [{"message_id": m, "payload": m} for m in ids]}
    assert tenant.admin.post("/publish/batch", batch).status_code == 201
    age_message(db, tenant.id, "b-1", timedelta(hours=25))
    again = tenant.admin.post("/publish/batch", batch)
    assert again.status_code == 201, again.json
    assert again.json["duplicates"] == [0, 2]  # b-1's id expired: published again


def test_concurrent_publishes_of_an_expired_id_publish_it_once(
        app, tenant: TenantHandle, db) -> None:
    tenant.create_queue("window")
    assert publish(tenant.admin, "race", "old").status_code == 201
    age_message(db, tenant.id, "race", timedelta(hours=25))
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def race(thread: int) -> None:
        response = publish(Caller(app.test_client(), tenant.admin.token), "race", thread)
        with lock:
            answers.append((response.status_code, response.json["offset"]))

    run_threads(8, race)
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    assert len({offset for _, offset in answers}) == 1  # every duplicate names the winner


def test_look_ups_cross_the_day_boundary(tenant: TenantHandle, db) -> None:
    tenant.create_queue("window")
    now = utcnow()
    if now.time() > time(23, 59):  # let the day turn, so yesterday's record stays < 24 h old
        sleep(61)
        now = utcnow()
    since_midnight = now - datetime.combine(now.date(), time(), UTC)
    assert publish(tenant.admin, "edge", "y").status_code == 201
    # Its record now lies at yesterday 23:59:30, the message a few hours old at most.
    age_message(db, tenant.id, "edge", since_midnight + timedelta(seconds=30), record_too=True)
    assert publish(tenant.admin, "today", "t").status_code == 201
    partitions = db.execute(text(
        "SELECT tableoid::regclass::text FROM message_records WHERE tenant_id = :t "
        "ORDER BY published_at"), {"t": tenant.id}).scalars().all()
    assert len(set(partitions)) == 2  # the two records lie in two days' partitions
    shown = tenant.admin.get("/messages/edge")
    assert shown.status_code == 200 and shown.json["payload"] == "y"
    again = publish(tenant.admin, "edge", "again")  # found in yesterday's partition
    assert again.status_code == 200 and again.json["duplicate"] is True


def test_a_message_past_its_topic_retention_is_not_found(tenant: TenantHandle, db) -> None:
    tenant.create_queue("window", retention_ms=60_000)
    assert publish(tenant.admin, "short-lived", 1).status_code == 201
    assert tenant.admin.get("/messages/short-lived").status_code == 200
    age_message(db, tenant.id, "short-lived", timedelta(minutes=2), record_too=True)
    gone = tenant.admin.get("/messages/short-lived")
    assert gone.status_code == 404 and gone.json["error"]["code"] == "MESSAGE_NOT_FOUND"


def test_deliveries_page_newest_first_across_days(tenant: TenantHandle, db) -> None:
    queue = tenant.create_queue("window")
    subscription = Subscription(tenant_id=tenant.id, topic_id=queue["id"], consumer_group="g",
                                consumer_name="c", subscription_type="redis_consumer",
                                handler_config={"type": "function", "function": "x:y"})
    db.add(subscription)
    db.commit()
    sid = subscription.id
    now = utcnow()
    ensure_partitions(db.connection(), now - timedelta(days=2), days_ahead=2)
    for day in range(3):
        for n in range(2):
            db.execute(text(
                "INSERT INTO consumption_records (id, tenant_id, subscription_id, message_id, "
                "consumer_instance, status, retry_count, consumed_at) VALUES "
                "(:id, :t, :s, :m, 'w', 'success', 0, :at)"),
                {"id": str(uuid.uuid4()), "t": tenant.id, "s": sid, "m": f"d{day}-{n}",
                 "at": now - timedelta(days=day, minutes=n)})
    db.commit()
    seen, cursor = [], None
    while True:
        page = tenant.admin.get(f"/subscriptions/{sid}/deliveries?limit=4"
                                + (f"&cursor={cursor}" if cursor else "")).json
        seen += [item["message_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["d0-0", "d0-1", "d1-0", "d1-1", "d2-0", "d2-1"]
