"""A dramatiq broker on Redis Streams.

Dramatiq queues are *pools* (a handful per deployment), not subscriptions: each pool has one
multiplexing consumer per worker process (`broker.consumer`) that serves every subscription
routed to the pool. Routes (subscriptions) are given by the worker process through a
`RouteTable`; the hooks the broker needs from it (dead-letter topics, control events) are a
`WorkerHooks` given to the constructor.

Retries never touch the topic stream (that would redeliver to every subscription): `enqueue`
with a delay parks the message in the pool's retry set (`broker.retries`), an atomic release
(by the scheduler, and by the pool's consumers, whoever comes first) moves it into the pool's
direct stream, and only this pool's workers read it. No `.DQ` queue and no `eta` option ever
reach dramatiq's Worker, so delays never live in worker memory. `ack` is XACK (plus XDEL on
the direct stream); `nack` of a subscription's delivery dead-letters in steps that each touch
one hash tag and can be repeated: store the dead letter once (a marker per delivery,
`dead_letter_store.lua`), append it to the dead-letter topic once (the stream's append
marker), then ack the delivery; a crash between steps leaves the delivery pending, and its
next failure finishes the job without a second dead letter.

It is a dramatiq broker for any actor, too (dramatiq's own broker tests run against it:
tests/vendor/dramatiq): other actors' messages travel through the pool's direct stream, stored
binary-safe (`broker.messages`, for encoders other than JSON), and a failed one is moved in one
step to the pool's dead-letter stream (`Keys.queue_dead_letters`). `join` waits until the
pool's retry set and direct stream are empty: every direct entry is deleted once acked,
dead-lettered or put back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import dramatiq
from dramatiq import Consumer, Message
from dramatiq.errors import ConnectionClosed
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker import messages
from broker.acks import ack_handles
from broker.connection import RedisClient, close_client, connect
from broker.consumer import RedisStreamsConsumer
from broker.dead_letters import (
    DEAD_LETTER_CAP,
    DEAD_LETTER_MARKER_TTL_MS,
    DeadLetter,
    DeadLetterEntry,
)
from broker.delivery import POOL_STREAM_CAP, Route, RouteTable
from broker.envelope import FIELD, Envelope
from broker.hooks import NoHooks, WorkerHooks
from broker.keys import Keys
from broker.pools import ensure_pool_group
from broker.proxy import Handle, StreamProxy
from broker.retries import RetrySet
from broker.scripts import LuaScript
from broker.streams import TopicStreams
from mq.settings import Settings

log = logging.getLogger(__name__)

#: Deliveries of one entry after which it is dead-lettered as `max_deliveries`.
MAX_DELIVERIES = 5
#: How long the dead letters of other actors' messages are kept (dramatiq's default).
QUEUE_DEAD_LETTER_TTL_MS = 7 * 24 * 3_600_000


class RedisStreamsBroker(dramatiq.Broker):
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        hooks: WorkerHooks | None = None,
        *,
        routes: RouteTable | None = None,
        keys: Keys | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
        max_connections: int = 16,
        max_deliveries: int = MAX_DELIVERIES,
    ) -> None:
        super().__init__(middleware=middleware)
        self.settings = settings
        self.hooks = hooks if hooks is not None else NoHooks()
        self.routes = routes if routes is not None else RouteTable()
        self.keys = keys or Keys.of(settings)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.max_deliveries = max_deliveries
        self.client = connect(settings, max_connections=max_connections, wait_s=30,
                              reply_timeout_s=30)
        self.retries = RetrySet(self.client, self.keys)
        self._ack = LuaScript(self.client, "broker", "ack")
        self._dead_letter_store = LuaScript(self.client, "broker", "dead_letter_store")
        self._queue_dead_letter = LuaScript(self.client, "broker", "queue_dead_letter")
        self._pool_requeue = LuaScript(self.client, "broker", "pool_requeue")
        self.topic_streams = TopicStreams(self.client, self.keys, max_len=settings.stream_max_len)
        self.queues: set[str] = set()
        self.consumers: list[RedisStreamsConsumer] = []
        #: The control stream position consumers start from (see `broker.control`); each
        #: consumer moves it on as it reads, so one started later resumes there.
        self.control_seen: str | None = None

    def route(self, subscription_id: str) -> Route | None:
        return self.routes.get(subscription_id)

    # -- dramatiq.Broker --------------------------------------------------------------------
    def wake_client(self) -> RedisClient:
        """A client with a connection of its own (per node), for blocking reads."""
        return connect(self.settings, max_connections=1, reply_timeout_s=None)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 1000) -> Consumer:
        try:
            consumer = RedisStreamsConsumer(self, queue_name, prefetch, timeout)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # A connection error, not "an unexpected error": dramatiq then logs one line, not
            # a traceback, each time it tries again during an outage.
            raise ConnectionClosed(exc) from None
        self.consumers.append(consumer)
        return consumer

    def consumer_closed(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        ensure_pool_group(self.client, self.keys, queue_name)
        self.emit_after("declare_queue", queue_name)
        # No declare_delay_queue: delays wait in Redis, so there are no `.DQ` consumers.

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        return set()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Send to the pool's direct stream, or park in its retry set for `delay` ms."""
        message = message.copy()
        message.options.pop("eta", None)
        pool = message.queue_name
        self.emit_before("enqueue", message, delay)
        data = messages.encode(message)
        if delay:
            self.retries.park(pool, data, delay)
            for consumer in list(self.consumers):
                if consumer.pool == pool:
                    consumer.releaser.due_in(delay)
        else:
            self.client.xadd(self.keys.pool_stream(pool), {"d": data}, maxlen=POOL_STREAM_CAP,
                             approximate=True)
        self.emit_after("enqueue", message, delay)
        return message

    def flush(self, queue_name: str) -> None:
        """Drop the pool's waiting retries and delayed messages and its direct entries
        (subscriptions' topic streams are the service's data, never flushed here)."""
        self.client.delete(self.keys.retry_due(queue_name), self.keys.retry_payloads(queue_name))
        self.client.xtrim(self.keys.pool_stream(queue_name), maxlen=0, approximate=False)

    def flush_all(self) -> None:
        for queue_name in list(self.queues):
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None, interval: int = 50) -> None:
        """Wait until the pool has no waiting retries or delayed messages and no unfinished
        direct entries (every direct entry is deleted when it is acked, dead-lettered or put
        back, so the stream's length is what is left to do)."""
        deadline = time.monotonic() + timeout / 1000 if timeout else None
        while True:
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.keys.retry_due(queue_name))
            pipe.xlen(self.keys.pool_stream(queue_name))
            if not any(pipe.execute()):
                return
            if deadline and time.monotonic() >= deadline:
                raise dramatiq.errors.QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    def close(self) -> None:
        for consumer in list(self.consumers):
            consumer.close()
        close_client(self.client)

    # -- acks and dead letters --------------------------------------------------------------------
    def _pending(self, handle: Handle) -> bool:
        try:
            rows = self.client.xpending_range(handle.stream, handle.group, min=handle.entry_id,
                                              max=handle.entry_id, count=1)
        except ResponseError:  # the group is gone (subscription deleted)
            return False
        return bool(rows)

    def _append_once(self, topic_id: str, marker: str, entry: str) -> str:
        """Append to partition 0 of the dead-letter topic, once per `marker` (a retry answers
        the first append's offset), then drop the stream's marker."""
        pipe = self.client.pipeline(transaction=False)
        self.topic_streams.queue_append_marked(pipe, topic_id, 0, [(marker, entry)])
        offset = str(pipe.execute()[0])
        self.client.hdel(self.keys.appended(topic_id, 0), marker)
        return offset

    def ack_plain(self, handle: Handle) -> None:
        """Acknowledge an entry without counting an outcome (nothing was delivered)."""
        ack_handles(self.client, self._ack, [handle])

    def dead_letter_direct(self, proxy: StreamProxy, error: str) -> bool:
        """Dead-letter a message that is no subscription delivery (any other actor's) into its
        pool's dead-letter stream (`queue_dead_letter.lua`); False when the entry was no
        longer pending."""
        handle, pool = proxy.handle, proxy.handle.group
        return bool(self._queue_dead_letter(
            keys=[handle.stream, self.keys.queue_dead_letters(pool)],
            args=[handle.group, handle.entry_id, messages.encode(proxy.message), error,
                  QUEUE_DEAD_LETTER_TTL_MS, DEAD_LETTER_CAP]))

    def requeue_direct(self, handles: list[Handle]) -> int:
        """Put unstarted entries of pool streams back for any consumer to read at once
        (`pool_requeue.lua`); returns how many went back."""
        by_owner: dict[tuple[str, str, str], list[str]] = {}
        for handle in handles:
            by_owner.setdefault((handle.stream, handle.group, handle.consumer), []).append(
                handle.entry_id)
        moved = 0
        for (stream, group, consumer), ids in by_owner.items():
            moved += int(self._pool_requeue(keys=[stream], args=[group, consumer, *ids]))
        return moved

    def dead_letter(self, proxy: StreamProxy, *, reason: str, error_message: str | None,
                    count_failed: bool) -> DeadLetter | None:
        """Dead-letter a delivery (see `dead_letter.lua`); None when the entry was no longer
        pending (finished or dead-lettered elsewhere) or its subscription is gone."""
        subscription_id, partition, offset, raw = proxy.args
        route = self.route(subscription_id)
        if route is None:
            log.warning("dead letter of deleted subscription %s dropped", subscription_id)
            self.ack_plain(proxy.handle)
            return None
        envelope = Envelope.decode({FIELD: raw})
        attempt = proxy.attempt_info.get("attempt")
        retry_count = attempt - 1 if attempt else int(proxy.options.get("retries", 0))
        entry = DeadLetterEntry.of(
            subscription_id=subscription_id, topic_name=route.topic_name, partition=partition,
            offset=offset, envelope=envelope, reason=reason, error_message=error_message,
            retry_count=retry_count)
        topic_id = self.hooks.dead_letter_topic(route)
        letter = self.hooks.dead_letter_message(route, envelope, entry)
        handle = proxy.handle
        if not self._pending(handle):  # finished or dead-lettered elsewhere meanwhile
            return None
        marker = self.keys.dead_letter_marker(subscription_id, handle.stream, handle.entry_id)
        self._dead_letter_store(
            keys=[self.keys.dead_letters(subscription_id),
                  self.keys.subscription_counters(subscription_id), marker],
            args=[json.dumps(entry.as_dict()), raw, "1" if count_failed else "0",
                  DEAD_LETTER_CAP, DEAD_LETTER_MARKER_TTL_MS])
        offset_out = self._append_once(topic_id, marker, letter.encode()[FIELD])
        if not ack_handles(self.client, self._ack, [handle])[0]:
            return None
        return DeadLetter(entry=entry, route=route, topic_id=topic_id, offset=offset_out,
                          envelope=letter)
