"""Dramatiq's broker fixtures, backed by `RedisStreamsBroker`, for dramatiq's own tests.

Every broker fixture dramatiq's tests use (`stub_broker`, `redis_broker`) is a
`RedisStreamsBroker` on the run's Redis, under a key namespace of its own that is deleted
after the test; the worker fixtures run a stock dramatiq `Worker` on it with the options of
dramatiq's own fixtures. Result and rate-limiter backends are the in-memory ones: the tests
check the broker, not the backends. `LEFT_OUT` lists the tests that are not run, each with
why (they look at another broker's internals, or need servers this suite does not have).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Middleware, Worker
from dramatiq.rate_limits import backends as rate_limit_backends
from dramatiq.results import backends as result_backends
from redis import Redis

from broker.redis_streams import RedisStreamsBroker
from mq.settings import Settings
from tests.conftest import REDIS_URL

HERE = Path(__file__).parent

#: A join without a timeout gives up after this long (ms): a broker that loses track of a
#: message then fails the test instead of hanging the run.
JOIN_LIMIT_MS = 20_000

_STUB_QUEUES = "reads or writes StubBroker's in-memory queues"
_REDIS_KEYS = "looks at RedisBroker's own Redis keys"
_REDIS_ID = "uses RedisBroker's `redis_message_id` option"

#: Tests left out, by node id under this folder, with why.
LEFT_OUT: dict[str, str] = {
    "test_actors.py::test_actors_can_be_sent_messages": _STUB_QUEUES,
    "test_actors.py::test_messages_belonging_to_missing_actors_are_rejected":
        "compares StubBroker's in-memory list of dead letters (`stub_broker.dead_letters`)",
    "test_actors.py::test_worker_handles_non_numeric_eta_and_logs_warning": _STUB_QUEUES,
    "test_actors.py::test_worker_handles_none_eta": _STUB_QUEUES,
    "test_redis.py::test_redis_unacked_messages_can_be_requeued":
        "runs RedisBroker's Lua commands (do_enqueue, do_fetch) and reads its ack sets",
    "test_redis.py::test_redis_messages_can_be_dead_lettered": _REDIS_KEYS + " (`<q>.XQ`)",
    "test_redis.py::test_redis_dead_lettered_messages_are_cleaned_up":
        _REDIS_KEYS + " (`<q>.XQ`) and runs its maintenance",
    "test_redis.py::test_redis_messages_belonging_to_missing_actors_are_rejected":
        _REDIS_KEYS + " (`<q>.XQ`); " + _REDIS_ID,
    "test_redis.py::test_redis_requeues_unhandled_messages_on_shutdown":
        _REDIS_KEYS + " (the queue's list); " + _REDIS_ID,
    "test_redis.py::test_redis_requeues_unhandled_delay_messages_on_shutdown":
        _REDIS_KEYS + " (the `.DQ` list); " + _REDIS_ID,
    "test_redis.py::test_redis_broker_can_connect_via_url": "constructs RedisBroker",
    "test_redis.py::test_redis_broker_can_connect_via_client": "constructs RedisBroker",
    "test_redis.py::test_redis_consumer_ack_can_retry_on_connection_error":
        "patches RedisBroker's `do_ack` and reads its consumer's `outstanding_message_count`",
    "test_redis.py::test_redis_consumer_nack_can_retry_on_connection_error":
        "patches RedisBroker's `do_nack` and reads its consumer's `outstanding_message_count`",
    "test_redis.py::test_redis_consumer_nack_does_not_raise_on_missing_id":
        "nacks a bare message carrying a bogus " + _REDIS_ID,
    "test_redis.py::test_redis_join_race_condition": "counts with RedisBroker's `do_qsize`",
    "test_stub_broker.py::test_stub_broker_raises_queue_error_when_consuming_undeclared_queues":
        "StubBroker's own rule (RedisBroker has none either: another process may declare "
        "and feed a queue)",
    "test_stub_broker.py::"
    "test_stub_broker_raises_queue_error_when_enqueueing_messages_on_undeclared_queues":
        "StubBroker's own rule (RedisBroker has none either: another process may declare "
        "and consume a queue)",
    "test_stub_broker.py::test_stub_broker_raises_queue_error_when_joining_on_undeclared_queues":
        "StubBroker's own rule (RedisBroker has none either)",
    "test_stub_broker.py::test_stub_broker_can_be_flushed":
        _STUB_QUEUES + " and its dead-letter lists",
    "test_stub_broker.py::test_stub_broker_respects_prefetch": _STUB_QUEUES,
    "test_worker.py::test_workers_process_messages_in_order":
        "asserts that the worker's queue holds all 5 messages about 1 ms after the last send: "
        "the latency of StubBroker's in-memory queue; over Redis a race (1 run in 17 failed "
        "here with both cores busy)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [item for item in items if _here(item) in LEFT_OUT]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


def _here(item: pytest.Item) -> str:
    path = Path(str(item.path))
    if path.parent != HERE:
        return ""
    return f"{path.name}::{item.name.split('[')[0]}"


class DeadLetters(Middleware):
    """The messages the worker nacks, by queue: what StubBroker keeps to re-raise their
    exceptions from `join` (`fail_fast`). Noted before the nack reaches the broker, so a
    join that sees the queue empty has seen them."""

    def __init__(self) -> None:
        self.by_queue: dict[str, list[tuple[type[BaseException], tuple[Any, ...]]]] = {}

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        """Keeps the exception's type and arguments, not the exception: one kept alive would
        keep its traceback's frames too (`test_exception_from_actor_doesnt_leak`)."""
        exc = message._exception or Exception("Message failed with unknown error")
        self.by_queue.setdefault(message.queue_name, []).append((type(exc), exc.args))

    def raise_first(self, queue_name: str) -> None:
        for kind, args in self.by_queue.get(queue_name, [])[:1]:
            try:
                failure = kind(*args)
            except Exception:
                failure = Exception(*args)
            raise failure


def stub_api(broker: RedisStreamsBroker) -> None:
    """Give `broker` what dramatiq's tests use of StubBroker's `join` and `flush_all`: a join
    re-raises the exception of a message the queue dead-lettered (`fail_fast`, on unless
    told otherwise), and gives up after `JOIN_LIMIT_MS` when given no timeout."""
    dead = DeadLetters()
    broker.add_middleware(dead)
    join, flush_all = broker.join, broker.flush_all

    def stub_join(queue_name: str, *, timeout: int | None = None,
                  fail_fast: bool | None = None) -> None:
        join(queue_name, timeout=timeout or JOIN_LIMIT_MS)
        if fail_fast is not False:
            dead.raise_first(queue_name)

    def stub_flush_all() -> None:
        flush_all()
        dead.by_queue.clear()

    broker.join = stub_join  # type: ignore[method-assign]
    broker.flush_all = stub_flush_all  # type: ignore[method-assign]


@pytest.fixture
def streams_broker(redis_namespace: str) -> Iterator[RedisStreamsBroker]:
    """A broker under a namespace of its own (dramatiq's fixtures flush the whole Redis)."""
    namespace = f"{redis_namespace}:dramatiq-{uuid.uuid4().hex[:8]}"
    broker = RedisStreamsBroker(Settings(redis_url=REDIS_URL, redis_namespace=namespace))
    stub_api(broker)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()
    client = Redis.from_url(REDIS_URL)
    stale = list(client.scan_iter(f"{namespace}:*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture(autouse=True)
def short_consumer_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused consumer thread restarts its consumer after this delay (dramatiq's default is
    3 s; the service's worker sets its own, too)."""
    monkeypatch.setattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", 0.1)


@pytest.fixture
def stub_broker(streams_broker: RedisStreamsBroker) -> RedisStreamsBroker:
    return streams_broker


@pytest.fixture
def redis_broker(streams_broker: RedisStreamsBroker) -> RedisStreamsBroker:
    return streams_broker


def _worker(broker: dramatiq.Broker, **options: Any) -> Iterator[Worker]:
    worker = Worker(broker, **options)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def stub_worker(stub_broker: RedisStreamsBroker) -> Iterator[Worker]:
    yield from _worker(stub_broker, worker_timeout=100, worker_threads=32)


@pytest.fixture
def redis_worker(redis_broker: RedisStreamsBroker) -> Iterator[Worker]:
    yield from _worker(redis_broker, worker_threads=32)


@pytest.fixture(params=["stub"])
def result_backend(request: pytest.FixtureRequest) -> result_backends.StubBackend:
    return result_backends.StubBackend()


@pytest.fixture
def redis_result_backend(streams_broker: RedisStreamsBroker) -> result_backends.RedisBackend:
    return result_backends.RedisBackend(client=streams_broker.client,
                                        namespace=f"{streams_broker.keys.ns}:results")


@pytest.fixture(params=["stub"])
def rate_limiter_backend(request: pytest.FixtureRequest) -> rate_limit_backends.StubBackend:
    return rate_limit_backends.StubBackend()
