"""Recovery of the delay set from the database, with the scheduler's own classes in-process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from redis import Redis
from sqlalchemy import select, update

from broker.delays import DelaySet
from broker.keys import Keys
from models import Database, MessageRecord, Schedule
from mq.settings import Settings
from publishing.group import Publisher
from scheduler.delayed import Rebuilder, mark_published
from scheduler.records import record_envelope
from scheduler.recurring import Recurring
from tests.conftest import REDIS_URL, TenantHandle


class Parts:
    def __init__(self, settings: Settings) -> None:
        self.redis = Redis.from_url(REDIS_URL, decode_responses=True)
        self.keys = Keys(settings.redis_namespace)
        self.database = Database(settings.database_url, pool_size=1)
        self.delays = DelaySet(self.redis, self.keys, stream_cap=settings.stream_max_len)
        self.rebuilder = Rebuilder(self.redis, self.keys, self.database, self.delays)
        self.publisher = Publisher.build(self.database.engine, self.redis, self.keys,
                                         stream_cap=settings.stream_max_len)

    def record(self, tenant_id: str, message_id: str) -> MessageRecord:
        with self.database.session() as session:
            record = session.scalar(select(MessageRecord).where(
                MessageRecord.tenant_id == tenant_id, MessageRecord.message_id == message_id))
            assert record is not None
            session.expunge(record)
            return record


@pytest.fixture
def parts(settings: Settings) -> Iterator[Parts]:
    found = Parts(settings)
    yield found
    found.publisher.close()
    found.redis.close()
    found.database.dispose()


def test_crash_after_release_is_finished_not_released_again(
        tenant: TenantHandle, parts: Parts) -> None:
    topic = tenant.create_queue()
    answer = tenant.admin.post("/publish/delayed", {"topic": topic["name"], "delay_ms": 1,
                                                    "payload": "once"}).json
    time.sleep(0.01)
    record = parts.record(tenant.id, answer["message_id"])
    released = parts.delays.release()  # the move; the scheduler "dies" before the update
    offset = released.offsets[record.id]
    assert parts.record(tenant.id, answer["message_id"]).status == "scheduled"
    assert parts.rebuilder.rebuild() == 0  # not parked again ...
    finished = parts.record(tenant.id, answer["message_id"])
    assert (finished.status, finished.offset_value) == ("published", offset)  # ... finished
    assert parts.redis.xlen(parts.keys.stream(topic["id"], record.partition_id)) == 1
    late_park = parts.delays.park(record.id, 0, topic["id"], 0, record_envelope(finished))
    assert not late_park  # a late park of a released message is refused too


def test_lost_entry_is_parked_again_with_its_due_time(
        tenant: TenantHandle, parts: Parts) -> None:
    topic = tenant.create_queue()
    answer = tenant.admin.post("/publish/delayed", {"topic": topic["name"], "delay_ms": 600_000,
                                                    "payload": "later"}).json
    record = parts.record(tenant.id, answer["message_id"])
    score = parts.redis.zscore(parts.keys.delayed(), record.id)
    assert parts.delays.cancel(record.id)  # Redis loses it (the record stays `scheduled`)
    assert parts.rebuilder.rebuild() >= 1
    assert parts.redis.zscore(parts.keys.delayed(), record.id) == score
    assert parts.rebuilder.rebuild() == 0  # nothing left to rebuild


def test_rebuild_waits_while_another_scheduler_holds_the_lease_until_it_runs_out(
        tenant: TenantHandle, parts: Parts) -> None:
    """A scheduler that died mid-rebuild never gives its lease up: it runs out instead."""
    topic = tenant.create_queue()
    answer = tenant.admin.post("/publish/delayed", {"topic": topic["name"], "delay_ms": 600_000,
                                                    "payload": 1}).json
    record = parts.record(tenant.id, answer["message_id"])
    parts.delays.cancel(record.id)
    lease = parts.rebuilder.lease
    parts.redis.set(lease.key, "a-dead-scheduler", px=300)
    assert parts.rebuilder.rebuild() is None
    assert parts.redis.zscore(parts.keys.delayed(), record.id) is None
    time.sleep(0.4)
    assert parts.rebuilder.rebuild() >= 1
    assert parts.redis.zscore(parts.keys.delayed(), record.id) is not None
    assert parts.redis.exists(lease.key) == 0  # given up once done


def test_messages_of_a_deleted_topic_are_dropped(tenant: TenantHandle, parts: Parts) -> None:
    topic = tenant.create_queue()
    answer = tenant.admin.post("/publish/delayed", {"topic": topic["name"], "delay_ms": 600_000,
                                                    "payload": 1}).json
    record = parts.record(tenant.id, answer["message_id"])
    assert parts.redis.zscore(parts.keys.delayed(), record.id) is not None
    assert tenant.admin.delete(f"/queues/{topic['name']}").status_code == 204
    parts.rebuilder.rebuild()
    assert parts.redis.zscore(parts.keys.delayed(), record.id) is None
    assert parts.redis.hget(parts.keys.delayed_payloads(), record.id) is None


def test_deleting_a_schedule_cancels_runs_parked_ahead(tenant: TenantHandle,
                                                       parts: Parts) -> None:
    topic = tenant.create_queue()
    created = tenant.admin.post("/publish/scheduled", {"topic": topic["name"],
                                                       "cron": "*/1 * * * * *",
                                                       "payload": 1}).json
    recurring = Recurring(parts.redis, parts.keys, parts.database, parts.publisher)
    assert recurring.fire_due() >= 1  # the next run, parked ahead of its time
    run_id = f"{created['schedule_id']}:{_ms(created['next_run_at'])}"
    run = parts.record(tenant.id, run_id)
    assert run.status == "scheduled" and run.headers["X-MQ-Schedule-Id"] == \
        created["schedule_id"]
    assert tenant.admin.delete(f"/schedules/{created['schedule_id']}").status_code == 204
    assert parts.record(tenant.id, run_id).status == "cancelled"
    assert parts.redis.zscore(parts.keys.delayed(), run.id) is None


def test_a_run_whose_claimant_died_is_published_once_the_claim_runs_out(
        tenant: TenantHandle, parts: Parts) -> None:
    topic = tenant.create_queue()
    created = tenant.admin.post("/publish/scheduled", {"topic": topic["name"],
                                                       "cron": "0 0 1 1 *",
                                                       "payload": "yearly"}).json
    with parts.database.session() as session:  # the run is due now
        session.execute(update(Schedule).where(Schedule.id == created["schedule_id"])
                        .values(next_run_at=datetime.now(UTC)))
        session.commit()
        due = session.get(Schedule, created["schedule_id"]).next_run_at
    run_ms = int(due.timestamp() * 1000)
    claim = parts.keys.lock(f"cron:{created['schedule_id']}:{run_ms}")
    parts.redis.set(claim, "a-scheduler-that-died", px=300)  # claimed, never published
    recurring = Recurring(parts.redis, parts.keys, parts.database, parts.publisher)
    recurring.fire_due()  # (other tests' schedules may be due too: judge this one alone)
    with parts.database.session() as session:  # not moved on past the unpublished run
        assert session.get(Schedule, created["schedule_id"]).next_run_at == due
        assert session.scalar(select(MessageRecord).where(
            MessageRecord.message_id == f"{created['schedule_id']}:{run_ms}")) is None
    time.sleep(0.4)
    recurring.fire_due()
    run = parts.record(tenant.id, f"{created['schedule_id']}:{run_ms}")
    assert (run.status, run.payload) == ("scheduled", "yearly")
    with parts.database.session() as session:
        assert session.get(Schedule, created["schedule_id"]).next_run_at > due


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)



def test_releaser_and_rebuild_marking_the_same_records_never_deadlock(
        tenant: TenantHandle, parts: Parts) -> None:
    """Both scheduler paths mark released records published; given the same records in
    opposite orders they must still update them in one order (PostgreSQL would otherwise
    abort one of them with a deadlock)."""
    topic = tenant.create_queue()
    ids = [str(uuid.uuid4()) for _ in range(400)]
    with parts.database.session() as session:
        session.add_all(MessageRecord(
            id=record_id, tenant_id=tenant.id, topic_id=topic["id"], message_id=record_id,
            headers={}, payload=None, payload_size=0, content_type="application/json",
            partition_id=0, status="scheduled", retry_count=0, published_at=datetime.now(UTC))
            for record_id in ids)
        session.commit()
    forward = {record_id: f"1-{n}" for n, record_id in enumerate(ids)}
    backward = dict(reversed(forward.items()))
    errors: list[BaseException] = []

    def mark(offsets: dict[str, str]) -> None:
        try:
            mark_published(parts.database, offsets)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(5):
        threads = [threading.Thread(target=mark, args=(o,)) for o in (forward, backward)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        with parts.database.session() as session:
            session.execute(update(MessageRecord).where(MessageRecord.id.in_(ids))
                            .values(status="scheduled"))
            session.commit()
