"""Wake-up reads of a pool consumer: which watched streams have new entries.

On one Redis, one blocking `XREAD` over all of them (`SingleWaker`). On a Redis Cluster, one
per hash slot (`SlotWaker`):

A cluster refuses a command over keys of several slots, so the consumer's one `XREAD` over
every watched stream (`broker.consumer`) becomes one per slot: the streams of a shard tag
(`broker.keys`), the pool's direct stream, the control stream. Each slot's read waits on a
connection of its own to the master that owns the slot, and the consumer thread waits on all
of them at once (`select`), so a process serves any number of subscriptions with one thread
per pool and at most `REDIS_CLUSTER_SHARDS` + 2 wake-up connections.

A read stays armed across calls while it watches the same streams: the last ids only move
when entries arrived, and then the armed read has fired already, so it is armed afresh after
its answer is collected. A read whose streams changed (a route came or went) is dropped with
its connection (Redis forgets a blocked client that disconnects). A read that fails (its
master died, or the slot moved: `MOVED`) refreshes the slot map and reports its streams as
changed, so the consumer reads them and meets the error, or the new master, itself; the slot
is armed again after `RETRY_S`.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from broker.connection import RedisClient
from broker.keys import slot_tag

log = logging.getLogger(__name__)

#: The server-side timeout of an armed read; it is armed again when it runs out.
SERVER_BLOCK_MS = 30_000
#: Seconds before a slot whose read failed is read again.
RETRY_S = 0.5


def waker_for(client: RedisClient) -> SingleWaker | SlotWaker:
    """The waker for a consumer's own client (`broker.connect(..., reply_timeout_s=None)`)."""
    return SlotWaker(client) if isinstance(client, RedisCluster) else SingleWaker(client)


@dataclass
class SingleWaker:
    """One `XREAD` over every watched stream, on the consumer's own connection."""

    client: Redis

    def wait(self, streams: dict[str, str], block_ms: int | None) -> list[str]:
        """The keys of `streams` (key -> last seen id) that have entries after their ids,
        waiting up to `block_ms` for one (None: only look)."""
        try:
            watched: dict[Any, Any] = dict(streams)
            replies: Any = self.client.xread(watched, count=1, block=block_ms)
        except ResponseError as exc:  # a watched stream was deleted while blocked
            log.info("wake-up read interrupted: %s", exc)
            return []
        return [key for key, _ in (replies or [])]

    @staticmethod
    def groups(keys: list[str]) -> list[list[str]]:
        """`keys` in groups one command may read together: all of them."""
        return [keys]

    def close(self) -> None:
        """Nothing of its own: the consumer closes the client."""


@dataclass
class _SlotRead:
    """The armed `XREAD` of one slot and its connection."""

    connection: AbstractConnection
    keys: list[str] = field(default_factory=list)
    armed: bool = False

    def arm(self, streams: dict[str, str]) -> None:
        self.connection.send_command("XREAD", "COUNT", 1, "BLOCK", SERVER_BLOCK_MS,
                                     "STREAMS", *streams, *streams.values())
        self.keys, self.armed = list(streams), True

    def ready(self) -> bool:
        return self.armed and self.connection.can_read(timeout=0)

    def fired(self) -> list[str]:
        """The reply of the armed read: the keys that have entries after their ids."""
        self.armed = False
        reply: Any = self.connection.read_response()
        if not reply:
            return []
        return [key for key, _ in (reply.items() if isinstance(reply, dict) else reply)]

    def close(self) -> None:
        self.armed = False
        self.connection.disconnect()


@dataclass
class SlotWaker:
    """See the module docstring. `client` is a cluster client of the consumer's own."""

    client: RedisCluster
    reads: dict[str, _SlotRead] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)

    def wait(self, streams: dict[str, str], block_ms: int | None) -> list[str]:
        """Like `XREAD COUNT 1 [BLOCK block_ms] STREAMS …` over `streams` (key -> last seen
        id): the keys that have entries after their ids. `block_ms=None` only looks."""
        by_slot = {slot_tag(keys[0]): {key: streams[key] for key in keys}
                   for keys in self.groups(list(streams))}
        for tag in [t for t in self.reads if t not in by_slot]:
            self.reads.pop(tag).close()
        fired: list[str] = []
        for tag, watched in by_slot.items():
            fired += self._arm(tag, watched)
        if fired:
            return fired
        ready = [(tag, read) for tag, read in self.reads.items() if read.ready()]
        if not ready and block_ms is not None:
            ready = self._select(block_ms / 1000)
        for tag, read in ready:
            fired += self._collect(tag, read)
        return fired

    @staticmethod
    def groups(keys: list[str]) -> list[list[str]]:
        """`keys` in groups one command may read together: those of one slot."""
        by_slot: dict[str, list[str]] = {}
        for key in keys:
            by_slot.setdefault(slot_tag(key), []).append(key)
        return list(by_slot.values())

    def close(self) -> None:
        for read in self.reads.values():
            read.close()
        self.reads.clear()

    def _arm(self, tag: str, streams: dict[str, str]) -> list[str]:
        """Arm the slot's read over `streams` unless it is armed over them already; answers
        the keys to report at once when arming failed."""
        read = self.reads.get(tag)
        if read is not None and read.armed:
            if read.keys == list(streams):
                return []
            read.close()
        if time.monotonic() < self.retry_at.get(tag, 0.0):
            return []
        try:
            if read is None or not read.connection.is_connected:
                read = self._open(next(iter(streams)), read)
                self.reads[tag] = read
            read.arm(streams)
        except RedisError as exc:
            return self._failed(tag, list(streams), exc)
        return []

    def _open(self, key: str, old: _SlotRead | None) -> _SlotRead:
        if old is not None:
            old.close()
        node = self.client.get_node_from_key(key)
        pool = node.redis_connection.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        connection.connect()
        return _SlotRead(connection)

    def _select(self, timeout_s: float) -> list[tuple[str, _SlotRead]]:
        armed: dict[Any, tuple[str, _SlotRead]] = {}
        for tag, read in self.reads.items():
            sock = getattr(read.connection, "_sock", None)  # redis-py keeps no public handle
            if read.armed and sock is not None:
                armed[sock] = (tag, read)
        if not armed:
            return []
        readable, _, _ = select.select(list(armed), [], [], timeout_s)
        return [armed[sock] for sock in readable]

    def _collect(self, tag: str, read: _SlotRead) -> list[str]:
        try:
            return read.fired()
        except RedisError as exc:
            return self._failed(tag, read.keys, exc)

    def _failed(self, tag: str, keys: Iterable[str], exc: RedisError) -> list[str]:
        log.info("wake-up read of slot {%s} failed: %s; refreshing the slot map", tag, exc)
        self.retry_at[tag] = time.monotonic() + RETRY_S
        read = self.reads.pop(tag, None)
        if read is not None:
            read.close()
        try:
            self.client.nodes_manager.initialize()
        except RedisError as refresh:
            log.info("slot map refresh failed: %s", refresh)
        return list(keys)
