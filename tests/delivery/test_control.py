"""The control plane: pause, resume, delete and seek reach running workers within 2 s."""

from __future__ import annotations

import threading
import time

import pytest

from tests.delivery.conftest import publish_many


@pytest.fixture
def processes(shared_processes):
    """The module's tests share their worker and scheduler (`SharedProcesses`): none kills,
    stops or reconfigures them."""
    return shared_processes


BOUND_S = 2.0


class Publisher(threading.Thread):
    """Publishes one message every `every` seconds until stopped; keeps the ids."""

    def __init__(self, tenant, topic: str, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.tenant, self.topic, self.every = tenant, topic, every
        self.ids: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            answer = self.tenant.admin.post("/publish", {"topic": self.topic, "payload": {"n": n}})
            self.ids.append(answer.json["message_id"])
            n += 1
            time.sleep(self.every)

    def stop(self) -> list[str]:
        self.halt.set()
        self.join()
        return self.ids


@pytest.mark.single_redis
def test_pause_stops_new_deliveries_within_2s_and_resume_catches_up(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    sub = subscriptions.create("orders", "billing", webhook.url("/p"))
    processes.worker()
    publisher = Publisher(tenant, "orders")
    publisher.start()
    webhook.wait_for("/p", 20)

    paused_at = time.time()
    assert tenant.admin.post(f"/subscriptions/{sub['id']}/pause").status_code == 200
    time.sleep(BOUND_S + 1.5)
    during = webhook.received("/p")
    late = [r.at - paused_at for r in during if r.at > paused_at + BOUND_S]
    assert late == [], f"deliveries started {late} s after the pause"
    held = len(publisher.ids) - len(during)
    assert held > 0

    assert tenant.admin.post(f"/subscriptions/{sub['id']}/resume").status_code == 200
    ids = publisher.stop()
    webhook.wait_for("/p", len(ids))
    delivered = [r.headers["x-mq-message-id"] for r in webhook.settle("/p")]
    assert sorted(set(delivered)) == sorted(ids), "every message delivered after resume"
    print(f"pause: {held} messages held while paused; {len(delivered) - len(ids)} duplicates")


@pytest.mark.single_redis
def test_topic_pause_holds_every_subscription(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    subscriptions.create("orders", "a", webhook.url("/a"))
    subscriptions.create("orders", "b", webhook.url("/b"))
    processes.worker()
    assert tenant.admin.put("/queues/orders", {"status": "paused"}).status_code == 200
    time.sleep(BOUND_S)
    ids = publish_many(tenant, "orders", 10)
    time.sleep(1.5)
    assert webhook.received("/a") == [] and webhook.received("/b") == []
    assert tenant.admin.put("/queues/orders", {"status": "active"}).status_code == 200
    for path in ("/a", "/b"):
        got = webhook.wait_for(path, 10)
        assert sorted(r.headers["x-mq-message-id"] for r in got) == sorted(ids)


def test_deleted_subscription_stops_delivering(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    gone = subscriptions.create("orders", "gone", webhook.url("/gone"))
    subscriptions.create("orders", "kept", webhook.url("/kept"))
    webhook.delay_s["/gone"] = 0.2  # deliveries still in flight when it is deleted
    processes.worker(threads=4)
    publish_many(tenant, "orders", 20)
    webhook.wait_for("/gone", 3)
    assert tenant.admin.delete(f"/subscriptions/{gone['id']}").status_code == 204
    deleted_at = time.time()
    publish_many(tenant, "orders", 5)
    webhook.wait_for("/kept", 25)  # acks of the deleted group's deliveries block nothing
    time.sleep(1.0)
    late = [r.at - deleted_at for r in webhook.received("/gone") if r.at > deleted_at + BOUND_S]
    assert late == []
    assert len(webhook.received("/gone")) < 20


def test_new_subscription_is_served_without_restart(tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    processes.worker()
    subscriptions.create("orders", "late", webhook.url("/late"))
    time.sleep(0.5)
    ids = publish_many(tenant, "orders", 5)
    got = webhook.wait_for("/late", 5, timeout=BOUND_S + 3)
    assert sorted(r.headers["x-mq-message-id"] for r in got) == sorted(ids)


def test_seek_to_earliest_replays_to_that_subscription_only(
        tenant, subscriptions, webhook, processes):
    tenant.create_queue("orders")
    replayed = subscriptions.create("orders", "replay", webhook.url("/replay"))
    other = subscriptions.create("orders", "other", webhook.url("/other"))
    processes.worker()
    ids = publish_many(tenant, "orders", 8)
    webhook.wait_for("/replay", 8)
    webhook.wait_for("/other", 8)

    answer = tenant.admin.post(f"/subscriptions/{replayed['id']}/seek", {"to": "earliest"})
    assert answer.status_code == 200, answer.json
    got = webhook.wait_for("/replay", 16)
    assert sorted(r.headers["x-mq-message-id"] for r in got[8:]) == sorted(ids)
    time.sleep(1.0)
    assert len(webhook.received("/other")) == 8
    assert other["id"] != replayed["id"]
