"""The broker with plain dramatiq actors (not the service's delivery actor): a failed message
is dead-lettered the dramatiq way, any encoder's bytes are stored, delayed messages are
released without a scheduler, and a stopping consumer gives its unstarted messages back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Middleware, Worker
from redis import Redis

from broker import messages
from broker.consumer import RedisStreamsConsumer
from broker.keys import Keys
from broker.redis_streams import RedisStreamsBroker
from mq.settings import Settings
from tests.conftest import REDIS_URL


class Nacks(Middleware):
    """Records the messages the worker nacked (`after_nack`)."""

    def __init__(self) -> None:
        self.nacked: list[str] = []

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self.nacked.append(message.message_id)


@pytest.fixture
def broker(redis_namespace: str) -> Iterator[RedisStreamsBroker]:
    """A broker without subscriptions, under a namespace of its own."""
    namespace = f"{redis_namespace}:generic-{uuid.uuid4().hex[:8]}"
    broker = RedisStreamsBroker(Settings(redis_url=REDIS_URL, redis_namespace=namespace))
    yield broker
    broker.close()


@pytest.fixture
def queue() -> str:
    return f"q{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(broker: RedisStreamsBroker) -> Iterator[Worker]:
    worker = Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


def test_a_failed_message_of_any_actor_is_dead_lettered_in_its_queue(
        broker: RedisStreamsBroker, queue: str, worker: Worker, redis_client: Redis) -> None:
    nacks = Nacks()
    broker.add_middleware(nacks)

    @dramatiq.actor(broker=broker, queue_name=queue, max_retries=0)
    def fails(n: int) -> None:
        raise RuntimeError(f"failed {n}")

    sent = fails.send(7)
    broker.join(queue, timeout=10_000)
    worker.join()

    assert nacks.nacked == [sent.message_id]
    keys = broker.keys
    letters = redis_client.xrange(keys.queue_dead_letters(queue))
    assert len(letters) == 1
    fields = letters[0][1]
    letter = messages.decode(fields["d"])
    assert (letter.message_id, letter.args) == (sent.message_id, (7,))
    assert fields["e"] == "RuntimeError: failed 7"
    assert redis_client.xlen(keys.pool_stream(queue)) == 0
    assert redis_client.xpending(keys.pool_stream(queue), queue)["pending"] == 0


@pytest.fixture
def pickle_encoder() -> Iterator[None]:
    before = dramatiq.get_encoder()
    dramatiq.set_encoder(dramatiq.PickleEncoder())
    yield
    dramatiq.set_encoder(before)


@pytest.mark.usefixtures("pickle_encoder")
def test_messages_of_a_binary_encoder_go_through_the_stream_and_the_retry_set(
        broker: RedisStreamsBroker, queue: str, worker: Worker) -> None:
    seen: list[Any] = []

    @dramatiq.actor(broker=broker, queue_name=queue)
    def keep(value: Any) -> None:
        seen.append(value)

    values = [b"\xff\x00binary", {"a", "set"}, "text"]
    keep.send(values[0])
    keep.send_with_options(args=(values[1],), delay=50)
    keep.send(values[2])
    broker.join(queue, timeout=10_000)
    worker.join()

    # By equality, not repr: an unpickled set may iterate in another order.
    assert len(seen) == len(values)
    assert all(value in seen for value in values)


def test_stored_text_keeps_any_bytes() -> None:
    for data in (b'{"json": 1}', b"\x80\x04pickle", b"\x00starts with NUL", b"", "é".encode()):
        text = messages.to_text(data)
        assert messages.from_text(text) == data
    assert messages.to_text(b'{"json": 1}') == '{"json": 1}'  # text is stored as it is


def test_a_delayed_message_runs_once_due_without_a_scheduler(
        broker: RedisStreamsBroker, queue: str, worker: Worker) -> None:
    ran: list[float] = []

    @dramatiq.actor(broker=broker, queue_name=queue)
    def later() -> None:
        ran.append(time.monotonic())

    sent_at = time.monotonic()
    later.send_with_options(delay=300)
    broker.join(queue, timeout=10_000)
    worker.join()

    assert len(ran) == 1 and ran[0] - sent_at >= 0.3


def test_a_stopping_consumer_gives_unstarted_messages_back_at_once(
        broker: RedisStreamsBroker, queue: str, redis_client: Redis) -> None:
    @dramatiq.actor(broker=broker, queue_name=queue)
    def work(n: int) -> None:
        pass

    for n in range(3):
        work.send(n)
    consumer = broker.consume(queue, prefetch=10, timeout=100)
    assert isinstance(consumer, RedisStreamsConsumer)
    taken = [next(consumer), next(consumer)]
    consumer.requeue([p for p in taken if p is not None])
    consumer.close()  # gives back the third, still buffered

    keys: Keys = broker.keys
    assert redis_client.xpending(keys.pool_stream(queue), queue)["pending"] == 0
    again = broker.consume(queue, prefetch=10, timeout=100)
    got = sorted(p.args[0] for p in (next(again) for _ in range(3)) if p is not None)
    again.close()
    assert got == [0, 1, 2]
