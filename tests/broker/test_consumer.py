"""The pool consumer on a real Redis, without a worker process: what one stream read takes,
and a dead letter going through the hooks the broker was built with."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from redis import Redis

from broker import control
from broker.consumer import RedisStreamsConsumer
from broker.dead_letters import DeadLetterEntry, list_entries, topic_envelope
from broker.delivery import DEFAULT_POOL, Route, RouteTable
from broker.envelope import Envelope
from broker.keys import Keys
from broker.proxy import StreamProxy
from broker.redis_streams import RedisStreamsBroker
from mq.settings import Settings


class RecordingHooks:
    """The worker side of the broker, reduced to what these tests look at."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []

    def dead_letter_topic(self, route: Route) -> str:
        return f"{route.topic_id}-dead"

    def dead_letter_message(self, route: Route, envelope: Envelope,
                            entry: DeadLetterEntry) -> Envelope:
        return topic_envelope(entry)

    def apply_control_events(self, events: list[dict[str, str]]) -> None:
        self.events.extend(events)


@pytest.fixture
def route(redis_client: Redis, keys: Keys) -> Iterator[Route]:
    """A subscription reading a one-partition topic from its start, with 10 messages."""
    topic_id = f"topic-{uuid.uuid4().hex[:8]}"
    route = Route(subscription_id=f"sub-{uuid.uuid4().hex[:8]}", tenant_id="tenant",
                  topic_id=topic_id, topic_name="orders", partition_count=1,
                  group="tenant:group", consumer_name="c", active=True)
    stream = keys.stream(topic_id, 0)
    redis_client.xgroup_create(stream, route.group, id="0", mkstream=True)
    for n in range(10):
        redis_client.xadd(stream, Envelope(message_id=f"m{n}", payload={"n": n},
                                           published_ms=1).encode())
    yield route
    redis_client.delete(stream, keys.stream(f"{topic_id}-dead", 0),
                        keys.dead_letters(route.subscription_id),
                        keys.subscription_counters(route.subscription_id))


def consumer_of(settings: Settings, route: Route,
                hooks: RecordingHooks) -> tuple[RedisStreamsBroker, RedisStreamsConsumer]:
    routes = RouteTable()
    routes.replace({route.subscription_id: route})
    broker = RedisStreamsBroker(settings, hooks, routes=routes)
    consumer = broker.consume(DEFAULT_POOL, prefetch=100, timeout=100)
    assert isinstance(consumer, RedisStreamsConsumer)
    return broker, consumer


def test_one_stream_read_takes_at_most_message_batch_size_entries(
        settings: Settings, route: Route) -> None:
    broker, consumer = consumer_of(replace(settings, message_batch_size=3), route,
                                   RecordingHooks())
    try:
        first = next(consumer)
        assert first is not None and first.subscription_id == route.subscription_id
        assert len(consumer.buffer) + 1 == 3 == len(consumer.leases)
    finally:
        consumer.close()
        broker.close()


def test_a_nacked_delivery_is_dead_lettered_through_the_worker_hooks(
        settings: Settings, route: Route, redis_client: Redis, keys: Keys) -> None:
    broker, consumer = consumer_of(settings, route, RecordingHooks())
    try:
        proxy = next(consumer)
        assert isinstance(proxy, StreamProxy)
        proxy.stuff_exception(RuntimeError("boom"))
        proxy.failure_reason = "permanent"
        consumer.nack(proxy)
    finally:
        consumer.close()
        broker.close()
    letter = proxy.dead_letter
    assert letter is not None and letter.topic_id == f"{route.topic_id}-dead"
    assert (letter.entry.message_id, letter.entry.failure_reason, letter.entry.error_message) \
        == ("m0", "permanent", "boom")
    listed, _ = list_entries(redis_client, keys, route.subscription_id, limit=10)
    assert listed == [letter.entry.as_dict()]
    published = redis_client.xrange(keys.stream(letter.topic_id, 0))
    assert [entry_id for entry_id, _ in published] == [letter.offset]
    assert json.loads(published[0][1]["m"])["p"] == letter.entry.as_dict()
    counters = redis_client.hgetall(keys.subscription_counters(route.subscription_id))
    assert counters == {"dead_lettered": "1", "failed": "1"}


def test_a_consumer_reads_control_events_from_the_position_its_worker_noted(
        settings: Settings, route: Route, redis_client: Redis, keys: Keys) -> None:
    """A worker notes the control stream's tip before it loads subscriptions; a change made
    between that load and its consumer's start reaches the consumer all the same."""
    hooks = RecordingHooks()
    routes = RouteTable()
    routes.replace({route.subscription_id: route})
    broker = RedisStreamsBroker(settings, hooks, routes=routes)
    broker.control_seen = control.tip(broker.client, broker.keys)
    changed = f"sub-{uuid.uuid4().hex[:8]}"
    control.announce(redis_client, keys, "subscription", changed, "upsert")  # meanwhile
    consumer = broker.consume(DEFAULT_POOL, prefetch=100, timeout=100)
    assert isinstance(consumer, RedisStreamsConsumer)
    try:
        next(consumer)
        assert {"kind": "subscription", "id": changed, "op": "upsert"} in hooks.events
        assert broker.control_seen != "0-0", "the consumer moves the noted position on"
    finally:
        consumer.close()
        broker.close()
