"""The group writer on real PostgreSQL and Redis: concurrent publishes grouped, stored once, in
per-key order; failures of either store in the middle of a group."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from api import create_app
from broker.envelope import Envelope
from broker.keys import Keys
from models import MessageRecord
from publishing.writer import IDLE_FLUSH_S
from tests.conftest import (
    ADMIN_DATABASE_URL,
    OPERATOR_TOKEN,
    Caller,
    RedisServer,
    TenantHandle,
)
from tests.processes import wait_until

THREADS = 8


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run `target(i)` in `count` threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            target(index)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def entries(redis: Redis, keys: Keys, topic_id: str, partitions: int
            ) -> dict[int, list[tuple[str, Envelope]]]:
    return {p: [(entry_id, Envelope.decode(fields))
                for entry_id, fields in redis.xrange(keys.stream(topic_id, p))]
            for p in range(partitions)}


def stored_ids(db: Any, topic_id: str) -> list[str]:
    return list(db.scalars(select(MessageRecord.message_id)
                           .where(MessageRecord.topic_id == topic_id)))


def test_concurrent_publishes_are_grouped_stored_once_and_kept_in_key_order(
        app, tenant: TenantHandle, redis_client, keys, db) -> None:
    queue = tenant.create_queue("grouped", partition_count=4)
    writer = app.extensions["mq"].writer
    groups_before, jobs_before = writer.groups_written, writer.jobs_written
    shared = [f"shared-{uuid.uuid4().hex[:6]}-{i}" for i in range(12)]
    answers: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def publish(thread: int) -> None:
        caller = Caller(app.test_client(), tenant.admin.token)
        order = 0
        for step in range(24):
            key = f"key-{thread}"
            if step % 6 == 5:  # a batch in the middle of single publishes, same key
                batch = [{"payload": {"t": thread, "order": order + i}, "key": key}
                         for i in range(5)]
                response = caller.post("/publish/batch", {"topic": "grouped", "messages": batch})
                assert response.status_code == 201, response.json
                order += 5
                continue
            response = caller.post("/publish", {"topic": "grouped", "key": key,
                                                "payload": {"t": thread, "order": order}})
            assert response.status_code == 201, response.json
            order += 1
            if step % 2 == 0:  # every thread publishes the same ids: most are duplicates
                message_id = shared[(step // 2 + thread) % len(shared)]
                response = caller.post("/publish", {"topic": "grouped", "message_id": message_id,
                                                    "payload": {"shared": message_id}})
                with lock:
                    answers.append((message_id, response.status_code, response.json))

    run_threads(THREADS, publish)

    by_id: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for message_id, status, body in answers:
        by_id[message_id].append((status, body))
    assert set(by_id) == set(shared)
    for got in by_id.values():
        assert sorted(status for status, _ in got) == [200] * (len(got) - 1) + [201], got
        originals = [{k: v for k, v in body.items() if k != "duplicate"} for _, body in got]
        assert all(o == originals[0] for o in originals), got  # duplicates repeat the answer
        assert all(body["duplicate"] is (status == 200) for status, body in got)

    streams = entries(redis_client, keys, queue["id"], 4)
    in_streams = [e.message_id for found in streams.values() for _, e in found]
    assert len(in_streams) == len(set(in_streams))  # nothing appended twice
    expected = THREADS * (20 + 4 * 5) + len(shared)
    assert len(in_streams) == expected
    assert sorted(stored_ids(db, queue["id"])) == sorted(in_streams)
    for partition, found in streams.items():
        orders: dict[int, list[int]] = defaultdict(list)
        for _, envelope in found:
            if isinstance(envelope.payload, dict) and "t" in envelope.payload:
                assert envelope.key == f"key-{envelope.payload['t']}"
                orders[envelope.payload["t"]].append(envelope.payload["order"])
        for thread, seen in orders.items():
            assert seen == sorted(seen), (partition, thread)  # per-key order kept
            assert len(seen) == 40
    assert writer.jobs_written - jobs_before > writer.groups_written - groups_before


def test_a_failing_stream_fails_only_the_publishes_that_go_to_it(
        app, tenant: TenantHandle, redis_client, keys, db) -> None:
    queue = tenant.create_queue("half-broken", partition_count=2)
    broken = keys.stream(queue["id"], 0)
    redis_client.set(broken, "not a stream")  # every XADD to partition 0 now fails
    answers: dict[str, tuple[int, dict[str, Any]]] = {}

    def publish(index: int) -> None:
        caller = Caller(app.test_client(), tenant.admin.token)
        message_id = f"half-{index}"
        response = caller.post("/publish", {"topic": "half-broken", "message_id": message_id,
                                            "partition": index % 2, "payload": index})
        answers[message_id] = (response.status_code, response.json)

    try:
        run_threads(10, publish)
    finally:
        redis_client.delete(broken)
    for index in range(10):
        status, body = answers[f"half-{index}"]
        if index % 2:
            assert status == 201, body
        else:
            assert status == 503 and body["error"]["code"] == "BROKER_NOT_AVAILABLE", body
    assert sorted(stored_ids(db, queue["id"])) == sorted(f"half-{i}" for i in range(1, 10, 2))

    caller = tenant.admin
    retried = caller.post("/publish", {"topic": "half-broken", "message_id": "half-0",
                                       "partition": 0, "payload": 0})
    assert retried.status_code == 201 and retried.json["duplicate"] is False
    [(offset, envelope)] = entries(redis_client, keys, queue["id"], 2)[0]
    assert offset == retried.json["offset"] and envelope.message_id == "half-0"


def test_redis_down_mid_group_answers_503_and_a_retry_publishes_for_real(
        settings, redis_server: RedisServer, database_url) -> None:
    app = create_app(dataclasses.replace(settings, redis_url=redis_server.url))
    try:
        operator = Caller(app.test_client(), OPERATOR_TOKEN)
        created = operator.post("/tenants", {"name": f"t-{uuid.uuid4().hex[:10]}"})
        admin = Caller(app.test_client(), created.json["admin_key"])
        queue = admin.post("/queues", {"name": "outage"}).json
        assert admin.post("/publish", {"topic": "outage", "payload": "before"}).status_code == 201

        redis_server.stop()
        answers: dict[str, Any] = {}

        def publish(index: int) -> None:
            caller = Caller(app.test_client(), created.json["admin_key"])
            response = caller.post("/publish", {"topic": "outage", "payload": index,
                                                "message_id": f"outage-{index}"})
            answers[f"outage-{index}"] = response

        run_threads(THREADS, publish)
        for response in answers.values():
            assert response.status_code == 503, response.json
            assert response.json["error"]["code"] == "BROKER_NOT_AVAILABLE"
        engine = create_engine(database_url)
        with engine.connect() as connection:  # nothing left that a retry would take for a dup
            assert connection.scalar(
                select(func.count()).select_from(MessageRecord)
                .where(MessageRecord.message_id.like("outage-%"))) == 0
        engine.dispose()

        redis_server.start()
        for index in range(THREADS):
            retried = wait_until(lambda i=index: (r := admin.post(
                "/publish", {"topic": "outage", "payload": i, "message_id": f"outage-{i}"}))
                .status_code != 503 and r, timeout=10, every=0.1)
            assert retried.status_code == 201 and retried.json["duplicate"] is False
        stream = Keys(settings.redis_namespace).stream(queue["id"], 0)
        with Redis.from_url(redis_server.url, decode_responses=True) as redis:
            got = [Envelope.decode(fields).message_id for _, fields in redis.xrange(stream)]
        assert sorted(got) == sorted(f"outage-{i}" for i in range(THREADS))
    finally:
        app.extensions["mq"].database.dispose()


@contextlib.contextmanager
def database_unreachable(database_url: str) -> Iterator[None]:
    """New connections to the test database refused and its sessions cut, as while
    PostgreSQL restarts; reachable again afterwards."""
    name = make_url(database_url).database
    admin = create_engine(ADMIN_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = :name"), {"name": name})
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_database_unreachable_mid_group_answers_503_with_nothing_in_redis(
        settings, database_url, redis_client, keys) -> None:
    """A group whose statement fails appends nothing; a message committed and appended just
    before the database went away keeps its 2xx, gets its offset once the database is back,
    and is in its stream once."""
    app = create_app(settings)
    writer = app.extensions["mq"].writer
    try:
        operator = Caller(app.test_client(), OPERATOR_TOKEN)
        created = operator.post("/tenants", {"name": f"t-{uuid.uuid4().hex[:10]}"})
        admin = Caller(app.test_client(), created.json["admin_key"])
        queue = admin.post("/queues", {"name": "db-outage"}).json
        writer.idle_flush_s = 3600  # the offset of the next publish waits for the next group
        first = admin.post("/publish", {"topic": "db-outage", "payload": 1,
                                        "message_id": "acknowledged"})
        assert first.status_code == 201
        answers: dict[str, Any] = {}

        def publish(index: int) -> None:
            caller = Caller(app.test_client(), created.json["admin_key"])
            answers[f"cut-{index}"] = caller.post(
                "/publish", {"topic": "db-outage", "payload": index, "message_id": f"cut-{index}"})

        with database_unreachable(database_url):
            run_threads(4, publish)
        for response in answers.values():
            assert response.status_code == 503, response.json
            assert response.json["error"]["code"] == "CONNECTION_ERROR"
        stream = keys.stream(queue["id"], 0)
        in_stream = [Envelope.decode(f).message_id for _, f in redis_client.xrange(stream)]
        assert in_stream == ["acknowledged"]  # the failed groups appended nothing

        writer.idle_flush_s = IDLE_FLUSH_S
        for message_id in answers:  # retries publish for real
            retried = admin.post("/publish", {"topic": "db-outage", "payload": 0,
                                              "message_id": message_id})
            assert retried.status_code == 201 and retried.json["duplicate"] is False
        in_stream = [Envelope.decode(f).message_id for _, f in redis_client.xrange(stream)]
        assert sorted(in_stream) == sorted(["acknowledged", *answers])
        engine = create_engine(database_url)
        with engine.connect() as connection:
            offset = wait_until(lambda: connection.scalar(
                select(MessageRecord.offset_value)
                .where(MessageRecord.message_id == "acknowledged")) or connection.rollback(),
                timeout=5)
        engine.dispose()
        assert offset == first.json["offset"]
    finally:
        writer.stop()
        app.extensions["mq"].database.dispose()


def test_a_restarted_database_costs_no_publish_an_error(app, tenant: TenantHandle,
                                                         database_url) -> None:
    """The writer's connection, cut while idle, is replaced on the next group."""
    tenant.create_queue("restart")
    assert tenant.admin.post("/publish", {"topic": "restart", "payload": 1}).status_code == 201
    with database_unreachable(database_url):
        pass
    response = tenant.admin.post("/publish", {"topic": "restart", "payload": 2})
    assert response.status_code == 201, response.json
