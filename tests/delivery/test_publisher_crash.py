"""An API worker killed (SIGKILL) in the middle of group writes: no acknowledged message is
lost, and once the outbox sweep has run no message reaches the webhook twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from broker.connection import connect
from broker.keys import Keys
from models import Database, MessageRecord
from publishing.group import Publisher
from scheduler.housekeeping import Housekeeping
from tests.delivery.conftest import Processes, Subscriptions, Webhook
from tests.processes import descendants, free_port, is_running, wait_until

PRODUCERS = 4
BATCH = 50


def _gunicorn_workers(master: int) -> list[int]:
    return [pid for pid in descendants(master) if is_running(pid)]


@pytest.mark.single_redis
def test_killed_api_worker_loses_nothing_and_duplicates_nothing(
        tenant, settings, processes: Processes, subscriptions: Subscriptions,
        webhook: Webhook) -> None:
    queue = tenant.create_queue("crash", partition_count=2)
    subscriptions.create("crash", "sink", webhook.url("/crash"))
    processes.worker()
    port = free_port()
    master = processes.api(port)
    url = f"http://127.0.0.1:{port}/api/v1/mq/publish/batch"
    headers = {"Authorization": f"Bearer {tenant.admin.token}"}
    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def produce(producer: int) -> None:
        """Publish batches until told to stop; a batch without an answer is sent again with
        the same message ids, as a careful producer does."""
        with httpx.Client(timeout=30) as client:
            sequence = 0
            while not stop.is_set():
                ids = [f"crash-{producer}-{sequence}-{i}" for i in range(BATCH)]
                body = {"topic": "crash", "messages": [
                    {"message_id": mid, "key": f"k{i % 7}", "payload": {"n": i}}
                    for i, mid in enumerate(ids)]}
                while True:
                    try:
                        response = client.post(url, json=body, headers=headers)
                    except httpx.TransportError:
                        time.sleep(0.05)
                        continue
                    if response.status_code in (200, 201):
                        break
                    assert response.status_code == 503, response.text
                    time.sleep(0.05)
                with lock:
                    acknowledged.update(ids)
                sequence += 1

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(PRODUCERS)]
    for thread in producers:
        thread.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20 * BATCH, timeout=60)
        victim = _gunicorn_workers(master.pid)[0]
        os.kill(victim, signal.SIGKILL)  # mid-group: the writer is busy all the time now
        wait_until(lambda: len(acknowledged) >= 40 * BATCH, timeout=60)
    finally:
        stop.set()
        for thread in producers:
            thread.join(60)

    database = Database(settings.database_url, pool_size=1)
    redis = connect(settings)
    keys = Keys.of(settings)
    publisher = Publisher.build(database.engine, redis, keys, stream_cap=settings.stream_max_len)
    try:
        time.sleep(0.5)  # the surviving writer writes its last offsets when idle
        with database.session() as session:
            orphans = session.scalar(select(func.count()).select_from(MessageRecord).where(
                MessageRecord.topic_id == queue["id"], MessageRecord.offset_value.is_(None)))
        Housekeeping(redis, keys, database, publisher).sweep_outbox(age=timedelta(0))
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(MessageRecord).where(
                MessageRecord.topic_id == queue["id"],
                MessageRecord.offset_value.is_(None))) == 0
    finally:
        publisher.close()
        database.dispose()
        redis.close()

    delivered = webhook.settle("/crash", quiet_s=2.0, timeout=120)
    ids = [r.headers["x-mq-message-id"] for r in delivered]
    print(f"{len(acknowledged)} acknowledged, {orphans} records left without offset by the kill")
    assert len(ids) == len(set(ids)), "a message reached the webhook twice"
    assert acknowledged <= set(ids), "an acknowledged message was lost"
    assert master.poll() is None  # gunicorn replaced its worker
    assert victim not in _gunicorn_workers(master.pid)
