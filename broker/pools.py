"""Pools: the dramatiq queues of this broker, and what a pool's consumer needs of it.

Each pool has a direct stream (`Keys.pool_stream`: released retries, redrives, hand-backs of
direct entries) read by one consumer group named after the pool.
"""

from __future__ import annotations

from typing import Any, Protocol

from dramatiq import Consumer, Message
from redis.exceptions import ResponseError

from broker.connection import RedisClient
from broker.dead_letters import DeadLetter
from broker.delivery import RouteTable
from broker.hooks import WorkerHooks
from broker.keys import Keys
from broker.proxy import Handle, StreamProxy
from broker.retries import RetrySet
from mq.settings import Settings

BUSYGROUP = "BUSYGROUP"
#: Stream id before every entry.
START = "0-0"


class PoolBroker(Protocol):
    """What a pool consumer uses of its broker (`RedisStreamsBroker`)."""

    settings: Settings
    keys: Keys
    client: RedisClient
    instance: str
    max_deliveries: int
    routes: RouteTable
    hooks: WorkerHooks
    retries: RetrySet
    control_seen: str | None

    def wake_client(self) -> RedisClient: ...

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]: ...

    def ack_plain(self, handle: Handle) -> None: ...

    def dead_letter(self, proxy: StreamProxy, *, reason: str, error_message: str | None,
                    count_failed: bool) -> DeadLetter | None: ...

    def dead_letter_direct(self, proxy: StreamProxy, error: str) -> bool: ...

    def requeue_direct(self, handles: list[Handle]) -> int: ...

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None: ...

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None: ...

    def consumer_closed(self, consumer: Consumer) -> None: ...


def ensure_pool_group(client: RedisClient, keys: Keys, pool: str) -> None:
    """Create the pool's direct stream and its one group, named after the pool."""
    try:
        client.xgroup_create(keys.pool_stream(pool), pool, id=START, mkstream=True)
    except ResponseError as exc:
        if BUSYGROUP not in str(exc):
            raise
