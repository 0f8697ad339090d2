"""The synchronous client against the real API: its calls, typed errors and retries."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from mq_client import (
    Client,
    Conflict,
    Forbidden,
    MQError,
    NetworkError,
    NotFound,
    QuotaExceeded,
    RetryPolicy,
    ServiceUnavailable,
    TopicAlreadyExists,
    TopicNotFound,
    Unauthorized,
    ValidationError,
)

from tests.client.conftest import Tenant, stored
from tests.client.proxy import DROP, Proxy, answer
from tests.processes import free_port

FAST = RetryPolicy(backoff_s=0.05, max_backoff_s=0.2)


def test_topic_subscription_and_message_calls(direct: Client) -> None:
    name = f"shop-{uuid.uuid4().hex[:8]}"
    created = direct.create_topic(name, partition_count=2, description="orders")
    assert (created["name"], created["partition_count"]) == (name, 2)
    assert direct.update_topic(name, description="all orders")["description"] == "all orders"
    assert name in [t["name"] for t in direct.list_topics(limit=1000)["items"]]

    published = direct.publish(name, {"order": 1}, key="customer-7", headers={"a": "b"})
    assert published["topic"] == name and published["duplicate"] is False
    assert len(published["message_id"]) == 32  # made by the client
    again = direct.publish(name, {"order": 1}, message_id=published["message_id"])
    assert again["duplicate"] is True and again["offset"] == published["offset"]
    record = direct.get_message(published["message_id"])
    assert (record["payload"], record["key"]) == ({"order": 1}, "customer-7")
    batch = direct.publish_batch(name, [{"payload": n} for n in range(3)])
    assert len(batch["message_ids"]) == 3
    assert direct.get_topic(name)["stats"]["published_total"] == 4

    sub = direct.create_subscription(
        name, "billing", "billing-1", subscription_type="webhook",
        handler_config={"type": "http", "url": "http://127.0.0.1:9/hook"})
    assert direct.get_subscription(sub["id"])["consumer_group"] == "billing"
    assert [s["id"] for s in direct.list_subscriptions(topic=name)["items"]] == [sub["id"]]
    assert direct.pause_subscription(sub["id"])["status"] == "paused"
    assert direct.resume_subscription(sub["id"])["status"] == "active"
    assert direct.update_subscription(sub["id"], max_retry_attempts=5)["max_retry_attempts"] == 5
    assert direct.delete_subscription(sub["id"]) is None
    assert direct.delete_topic(name) is None
    with pytest.raises(TopicNotFound):
        direct.get_topic(name)


def test_errors_are_typed_with_the_api_code(direct: Client, tenant: Tenant, topic: str) -> None:
    with pytest.raises(TopicNotFound) as missing:
        direct.publish("no-such-topic", {"n": 1})
    error = missing.value
    assert isinstance(error, NotFound) and isinstance(error, MQError)
    assert (error.code, error.status) == ("TOPIC_NOT_FOUND", 404)
    assert error.request_id and "no-such-topic" in error.message

    with pytest.raises(ValidationError) as invalid:
        direct.create_topic(f"t-{uuid.uuid4().hex[:6]}", partition_count=0)
    assert (invalid.value.status, invalid.value.code) == (422, "VALIDATION_ERROR")
    assert "partition_count" in invalid.value.details
    with pytest.raises(ValidationError) as bad_headers:
        direct.publish(topic, {"n": 1}, headers={"a": 1})
    assert "headers" in bad_headers.value.details

    with pytest.raises(TopicAlreadyExists) as taken:
        direct.create_topic(topic)
    assert isinstance(taken.value, Conflict) and taken.value.status == 409

    with Client(tenant.base, "not-a-key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.publish(topic, {"n": 1})
    assert (denied.value.code, denied.value.status) == ("UNAUTHORIZED", 401)

    with Client(tenant.base, tenant.key("producer")) as producer:
        assert producer.publish(topic, {"n": 1})["duplicate"] is False
        with pytest.raises(Forbidden) as forbidden:
            producer.create_topic(f"t-{uuid.uuid4().hex[:6]}")
    assert forbidden.value.status == 403


def test_a_publish_retried_after_a_lost_answer_is_stored_once(
        direct: Client, tenant: Tenant, topic: str, via_proxy: Proxy) -> None:
    via_proxy.then(DROP)  # stored by the service, but the connection drops before the answer
    with Client(via_proxy.url, tenant.admin_key, retry=FAST) as client:
        answer_ = client.publish(topic, {"order": 42})
    first, retried = via_proxy.requests("/publish")
    assert first.status == 201 and retried.status == 200
    assert first.json()["message_id"] == retried.json()["message_id"] == answer_["message_id"]
    assert answer_["duplicate"] is True
    assert stored(direct, topic) == 1


def test_a_call_that_may_have_been_done_is_not_sent_again(tenant: Tenant,
                                                          via_proxy: Proxy) -> None:
    via_proxy.then(DROP)
    name = f"t-{uuid.uuid4().hex[:6]}"
    with (Client(via_proxy.url, tenant.admin_key, retry=FAST) as client,
          pytest.raises(NetworkError) as failed):
        client.create_topic(name)
    assert failed.value.status is None and failed.value.__cause__ is not None
    assert len(via_proxy.requests("/queues")) == 1


def test_retry_after_of_a_503_is_honoured(direct: Client, tenant: Tenant, topic: str,
                                          via_proxy: Proxy) -> None:
    via_proxy.then(answer(503, retry_after="1"))
    with Client(via_proxy.url, tenant.admin_key, retry=FAST) as client:
        assert client.publish(topic, {"n": 1})["duplicate"] is False
    refused, accepted = via_proxy.requests("/publish")
    assert accepted.at - refused.at >= 1.0
    assert refused.json()["message_id"] == accepted.json()["message_id"]
    assert stored(direct, topic) == 1


def test_backoff_is_exponential_and_attempts_are_bounded(tenant: Tenant, topic: str,
                                                         via_proxy: Proxy) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=0.2, max_backoff_s=10, jitter=0.1)
    via_proxy.then(answer(503), answer(503), answer(503))
    with (Client(via_proxy.url, tenant.admin_key, retry=policy) as client,
          pytest.raises(ServiceUnavailable) as gave_up):
        client.publish(topic, {"n": 1})
    assert gave_up.value.code == "CONNECTION_ERROR"
    times = [seen.at for seen in via_proxy.requests("/publish")]
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    assert first >= 0.2 and second >= 0.4 and second > first


def test_the_publish_rate_quota_is_waited_out(direct: Client, tenant: Tenant, topic: str,
                                              via_proxy: Proxy) -> None:
    """A real quota (2 messages/s): the 429's `Retry-After: 1` is waited before the retry."""
    tenant.set_quotas(publish_rate=2)
    with Client(tenant.base, tenant.admin_key, retry=RetryPolicy(max_attempts=1)) as impatient:
        next_second()
        with pytest.raises(QuotaExceeded) as refused:
            for n in range(6):  # any three within a second are refused the third
                impatient.publish(topic, {"n": n})
    assert (refused.value.status, refused.value.retry_after) == (429, 1.0)
    accepted = n  # the ones before the refused one

    with Client(via_proxy.url, tenant.admin_key, retry=FAST) as patient:
        next_second()
        for m in range(6):
            assert patient.publish(topic, {"m": m})["duplicate"] is False
    seen = via_proxy.requests("/publish")
    waits = [(first, retry) for first, retry in itertools.pairwise(seen)
             if first.status == 429]
    assert waits, [s.status for s in seen]
    for first, retry in waits:
        assert retry.at - first.at >= 1.0
        assert retry.json()["message_id"] == first.json()["message_id"]
    assert [s.status for s in seen].count(201) == 6
    assert stored(direct, topic) == accepted + 6


def next_second() -> None:
    """Sleep until a new second starts (the publish rate is counted per second)."""
    time.sleep(1 - time.time() % 1 + 0.01)


def test_an_unreachable_service_is_a_network_error() -> None:
    with (Client(f"http://127.0.0.1:{free_port()}", "key",
                 retry=RetryPolicy(max_attempts=2, backoff_s=0.01)) as client,
          pytest.raises(NetworkError)):
        client.publish("orders", {"n": 1})
