"""`BatchPublisher` against the real API: concurrent publishes gathered into batch requests,
their limits, lost answers, and failures settled message by message."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid

import pytest
from mq_client import (
    BatchPublisher,
    Client,
    PayloadTooLarge,
    RetryPolicy,
    TopicNotFound,
    ValidationError,
)

from tests.client.conftest import Tenant, stored
from tests.client.proxy import DROP, Proxy, answer

THREADS, EACH = 16, 250
FAST = RetryPolicy(backoff_s=0.05, max_backoff_s=0.2)


def publish_from_threads(publisher: BatchPublisher, threads: int, each: int
                         ) -> list[concurrent.futures.Future[str]]:
    """`each` publishes from each of `threads` threads started together."""
    start = threading.Barrier(threads)
    futures: list[list[concurrent.futures.Future[str]]] = [[] for _ in range(threads)]

    def produce(n: int) -> None:
        start.wait()
        for i in range(each):
            futures[n].append(publisher.publish({"thread": n, "i": i}, key=f"k{n}"))

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [future for some in futures for future in some]


def batch_sizes(proxy: Proxy) -> list[int]:
    return [len(seen.json()["messages"]) for seen in proxy.requests("/publish")]


def test_concurrent_publishes_are_sent_in_batches(direct: Client, tenant: Tenant, topic: str,
                                                  via_proxy: Proxy) -> None:
    with (Client(via_proxy.url, tenant.admin_key) as client,
          client.batch_publisher(topic) as publisher):
        futures = publish_from_threads(publisher, THREADS, EACH)
        ids = [future.result(timeout=30) for future in futures]
    assert len(set(ids)) == THREADS * EACH
    sizes = batch_sizes(via_proxy)
    assert sum(sizes) == THREADS * EACH
    assert len(sizes) <= THREADS * EACH / 10, sizes
    assert all(seen.status == 201 for seen in via_proxy.requests("/publish"))
    assert stored(direct, topic) == THREADS * EACH
    sample = direct.get_message(ids[-1])
    assert sample["payload"] == {"thread": THREADS - 1, "i": EACH - 1}


def test_a_batch_is_bounded_by_messages_and_bytes(direct: Client, tenant: Tenant, topic: str,
                                                  via_proxy: Proxy) -> None:
    with Client(via_proxy.url, tenant.admin_key) as client:
        with client.batch_publisher(topic, max_messages=7, linger_ms=50) as publisher:
            futures = [publisher.publish(n) for n in range(50)]
        assert max(batch_sizes(via_proxy)) == 7
        via_proxy.reset()
        with client.batch_publisher(topic, max_bytes=2048, linger_ms=50) as publisher:
            futures += [publisher.publish("x" * 200) for _ in range(40)]
    assert all(len(seen.body) <= 2048 for seen in via_proxy.requests("/publish"))
    assert len(via_proxy.requests("/publish")) >= 4
    concurrent.futures.wait(futures, timeout=10)
    assert all(future.exception() is None for future in futures)
    assert stored(direct, topic) == 90


def test_linger_sends_a_lone_message_without_a_flush(tenant: Tenant, topic: str) -> None:
    with (Client(tenant.base, tenant.admin_key) as client,
          client.batch_publisher(topic, linger_ms=20) as publisher):
        started = time.monotonic()
        message_id = publisher.publish({"alone": True}).result(timeout=5)
        assert time.monotonic() - started >= 0.02
        assert client.get_message(message_id)["payload"] == {"alone": True}
        later = publisher.publish({"alone": False}, message_id="mine-1")
        publisher.flush()
        assert later.done() and later.result() == "mine-1"


def test_a_batch_retried_after_a_lost_answer_is_stored_once(
        direct: Client, tenant: Tenant, topic: str, via_proxy: Proxy) -> None:
    via_proxy.then(DROP)
    with (Client(via_proxy.url, tenant.admin_key, retry=FAST) as client,
          client.batch_publisher(topic, linger_ms=10_000) as publisher):
        futures = [publisher.publish({"n": n}) for n in range(100)]
        publisher.flush()  # one batch, now
        ids = {future.result() for future in futures}
    first, retried = via_proxy.requests("/publish")
    assert first.body == retried.body
    assert first.status == 201 and retried.status == 200
    assert retried.answer_json()["duplicates"] == list(range(100))
    assert ids == set(retried.answer_json()["message_ids"])
    assert stored(direct, topic) == 100


def test_a_503_then_success_resolves_every_future(direct: Client, tenant: Tenant, topic: str,
                                                  via_proxy: Proxy) -> None:
    via_proxy.then(answer(503, retry_after="0.3"))
    with (Client(via_proxy.url, tenant.admin_key, retry=FAST) as client,
          client.batch_publisher(topic) as publisher):
        futures = [publisher.publish(n) for n in range(30)]
    assert all(future.result() for future in futures)
    refused, accepted = via_proxy.requests("/publish")
    assert accepted.at - refused.at >= 0.3
    assert stored(direct, topic) == 30


def test_failures_settle_the_messages_they_are_about(direct: Client, tenant: Tenant,
                                                     topic: str) -> None:
    with Client(tenant.base, tenant.admin_key) as client:
        with client.batch_publisher(topic, linger_ms=50) as publisher:
            good = [publisher.publish(n) for n in range(3)]
            bad = publisher.publish("bad", headers={"a": 1})
            good += [publisher.publish(n) for n in range(3, 6)]
        with client.batch_publisher("no-such-topic") as nowhere:
            lost = nowhere.publish({"n": 1})
            nowhere.flush()
    assert all(future.result() for future in good)
    error = bad.exception()
    assert isinstance(error, ValidationError) and "headers" in error.details, error
    assert isinstance(lost.exception(), TopicNotFound)
    assert stored(direct, topic) == 6
    with pytest.raises(RuntimeError):
        publisher.publish("after close")
    with (Client(tenant.base, tenant.admin_key) as client,
          client.batch_publisher(topic) as publisher, pytest.raises(TypeError)):
        publisher.publish(object())  # not JSON: refused at once, in the caller


def test_the_body_is_the_api_batch(tenant: Tenant, topic: str, via_proxy: Proxy) -> None:
    with (Client(via_proxy.url, tenant.admin_key) as client,
          client.batch_publisher(topic) as publisher):
        publisher.publish({"a": "é"}, key="k", headers={"h": "v"}, correlation_id="c").result()
    [seen] = via_proxy.requests("/publish")
    assert seen.path == f"/api/v1/mq/topics/{topic}/publish"
    [message] = json.loads(seen.body)["messages"]
    assert set(message) == {"payload", "key", "headers", "correlation_id", "message_id"}
    assert message["payload"] == {"a": "é"}


def test_a_message_too_large_for_the_topic_fails_alone(direct: Client, tenant: Tenant,
                                                       via_proxy: Proxy) -> None:
    name = f"small-{uuid.uuid4().hex[:8]}"
    direct.create_topic(name, max_message_bytes=200)
    with (Client(via_proxy.url, tenant.admin_key) as client,
          client.batch_publisher(name, linger_ms=10_000) as publisher):
        futures = [publisher.publish({"n": n}) for n in range(7)]
        large = publisher.publish("x" * 1000)
        futures += [publisher.publish({"n": n}) for n in range(7, 10)]
        publisher.flush()
    error = large.exception()
    assert isinstance(error, PayloadTooLarge) and error.status == 413, error
    assert all(future.result() for future in futures)
    assert stored(direct, name) == 10
    refused, accepted = via_proxy.requests("/publish")  # the others went again at once
    assert (refused.status, accepted.status) == (413, 201)
    assert len(accepted.json()["messages"]) == 10
