"""A dramatiq broker on Redis Streams, with one multiplexing consumer per pool and process.

Dramatiq queues are *pools* (a handful per deployment), not subscriptions: a dramatiq queue
costs a consumer thread, and one process must serve thousands of subscriptions. The pool's
`StreamsConsumer` serves every subscription routed to the pool:

- it learns which streams changed with ONE blocking `XREAD` (no group, a wake-up signal only)
  over the watched topic streams, the pool's direct stream and the control stream, on its own
  connection;
- it then reads the changed ("dirty") subscriptions' consumer groups with pipelined,
  non-blocking `XREADGROUP`, round-robin, within the prefetch budget (buffered + queued +
  running entries), and never blocks while a subscription is still dirty; while busy it peeks
  (non-blocking XREAD) every `PEEK_S` so control events and cold subscriptions are not starved;
- it renews the lease of every entry it holds (ownership-checked `XCLAIM JUSTID`) and reclaims
  entries idle for longer than the subscription's `session_timeout_ms` (`XAUTOCLAIM`): a dead
  worker's deliveries go to a live one; an entry delivered more than `max_deliveries` times
  (it kept killing its worker) is dead-lettered as `max_deliveries`;
- it hands unstarted entries back at once on shutdown (`XCLAIM` to the `abandoned` consumer
  with a huge idle time, so the next reclaim pass anywhere takes them).

Retries never touch the topic stream (that would redeliver to every subscription): `enqueue`
with a delay parks the message in the pool's sorted set, the scheduler's atomic Lua release
moves it into the pool's direct stream, and only this pool's workers read it. No `.DQ` queue
and no `eta` option ever reach dramatiq's Worker, so delays never live in worker memory.
`ack` is XACK (plus XDEL on the direct stream); `nack` dead-letters atomically.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq import Consumer, Message, MessageProxy
from dramatiq.errors import ConnectionClosed
from redis import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from broker.control import announce
from broker.dead_letters import DEAD_LETTER_CAP, build_entry, topic_envelope
from broker.delivery import (
    ABANDONED_CONSUMER,
    DEFAULT_POOL,
    POOL_STREAM_CAP,
    Route,
    delivery_message,
)
from broker.envelope import FIELD, Envelope
from broker.keys import Keys
from broker.scripts import Scripts
from broker.takeover import CHECK_S, DeadWorkers, take_pending
from mq.settings import Settings

log = logging.getLogger(__name__)

#: How often a busy consumer still looks for new entries, control events and cold streams.
PEEK_S = 0.2
#: Deliveries of one entry after which it is dead-lettered as `max_deliveries`.
MAX_DELIVERIES = 5
#: Idle time given to handed-back entries: "forever", so any reclaim pass takes them.
ABANDONED_IDLE_MS = 10**12
#: Stop renewing a lease after this long (a thread stuck where no time limit reaches it).
MAX_LEASE_S = 660.0
RELEASE_BATCH = 500
BUSYGROUP = "BUSYGROUP"
#: Reclaim passes run at most this often (each due group is looked at every half timeout).
RECLAIM_PASS_S = 0.25
#: XAUTOCLAIM commands per pipelined round trip.
RECLAIM_PIPELINE = 100
#: The counter (`Keys.subscription_counters`) an acknowledged outcome adds to.
COUNTER_OF_OUTCOME = {"success": "delivered", "failed": "failed", "filtered": "filtered"}


@dataclass(frozen=True)
class Handle:
    """Where a delivery came from: acking, renewing and handing back use it."""

    stream: str
    group: str
    entry_id: str
    consumer: str
    direct: bool  # from the pool's direct stream (one group: ack also deletes the entry)


class StreamProxy(MessageProxy):
    """A message with its delivery handle (kept off `options`, which travel with retries)."""

    def __init__(self, message: Message[Any], handle: Handle, subscription_id: str) -> None:
        super().__init__(message)
        self.handle = handle
        self.subscription_id = subscription_id
        #: Set while processing: success | failed | filtered | expired | dropped | handback.
        self.outcome: str | None = None
        self.error_message: str | None = None
        self.failure_reason: str | None = None
        self.attempt_info: dict[str, Any] = {}
        self.dead_letter: dict[str, Any] | None = None


DeadLetterTopic = Callable[[Route], str]
#: (route, stored message, dead-letter entry) -> the message its dead-letter topic stores.
LetterBuilder = Callable[[Route, Envelope, dict[str, Any]], Envelope]
ControlListener = Callable[[list[dict[str, str]]], None]


class RedisStreamsBroker(dramatiq.Broker):
    """See the module docstring. Routes (subscriptions) are given by the worker process."""

    def __init__(
        self,
        settings: Settings,
        *,
        keys: Keys | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
        max_connections: int = 16,
        max_deliveries: int = MAX_DELIVERIES,
    ) -> None:
        super().__init__(middleware=middleware)
        self.settings = settings
        self.keys = keys or Keys(settings.redis_namespace)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.max_deliveries = max_deliveries
        self.client = Redis(connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=max_connections, timeout=30,
            decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
            health_check_interval=30, password=settings.redis_password))
        self.scripts = Scripts(self.client)
        self.queues: set[str] = set()
        self._routes: dict[str, Route] = {}
        self.routes_version = 0
        self._routes_lock = threading.Lock()
        #: Set by the worker: resolves (creating on first use) a route's dead-letter topic id.
        self.dead_letter_topic: DeadLetterTopic | None = None
        #: Set by the worker: the message a dead-letter topic stores of a dead letter (the
        #: listing keeps the entry as built, with the message in its stored form).
        self.letter_builder: LetterBuilder | None = None
        #: Set by the worker: applies control events (reloads definitions).
        self.control_listener: ControlListener | None = None
        self.consumers: list[StreamsConsumer] = []

    # -- routes ---------------------------------------------------------------------------
    def set_routes(self, routes: dict[str, Route]) -> None:
        with self._routes_lock:
            self._routes = dict(routes)
            self.routes_version += 1

    def route(self, subscription_id: str) -> Route | None:
        return self._routes.get(subscription_id)

    @property
    def routes(self) -> dict[str, Route]:
        return self._routes

    # -- dramatiq.Broker --------------------------------------------------------------------
    def wake_client(self) -> Redis:
        """A client with a single connection of its own, for blocking reads."""
        return Redis.from_url(self.settings.redis_url, decode_responses=True,
                              socket_connect_timeout=5, socket_timeout=None,
                              password=self.settings.redis_password, max_connections=1)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 1000) -> Consumer:
        consumer = StreamsConsumer(self, queue_name, prefetch, timeout)
        self.consumers.append(consumer)
        return consumer

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
        data = message.encode().decode()
        if delay:
            self.scripts.schedule(keys=[self.keys.retry_due(pool), self.keys.retry_payloads(pool)],
                                  args=[uuid.uuid4().hex, int(delay), data])
        else:
            self.client.xadd(self.keys.pool_stream(pool), {"d": data}, maxlen=POOL_STREAM_CAP,
                             approximate=True)
        self.emit_after("enqueue", message, delay)
        return message

    def flush(self, queue_name: str) -> None:
        self.client.delete(self.keys.retry_due(queue_name), self.keys.retry_payloads(queue_name))
        self.client.xtrim(self.keys.pool_stream(queue_name), maxlen=0, approximate=False)

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the pool has no waiting retries and no unfinished direct entries."""
        deadline = time.monotonic() + timeout / 1000 if timeout else None
        while True:
            waiting = self.client.zcard(self.keys.retry_due(queue_name))
            groups = self.client.xinfo_groups(self.keys.pool_stream(queue_name))
            busy = sum(int(g.get("pending", 0)) + int(g.get("lag") or 0) for g in groups)
            if not waiting and not busy:
                return
            if deadline and time.monotonic() > deadline:
                raise dramatiq.errors.QueueJoinTimeout(queue_name)
            time.sleep(0.05)

    def close(self) -> None:
        self.client.close()

    # -- dead letters -------------------------------------------------------------------------
    def dead_letter(self, proxy: StreamProxy, *, reason: str, error_message: str | None,
                    count_failed: bool) -> dict[str, Any] | None:
        """Dead-letter a delivery (see `scripts.DEAD_LETTER`); returns the entry, or None when
        the entry was no longer pending (finished or dead-lettered elsewhere)."""
        subscription_id, partition, offset, raw = proxy.args
        route = self.route(subscription_id)
        if route is None or self.dead_letter_topic is None:
            log.warning("dead letter of deleted subscription %s dropped", subscription_id)
            self._ack_plain(proxy.handle)
            return None
        envelope = Envelope.decode({FIELD: raw})
        attempt = proxy.attempt_info.get("attempt")
        retry_count = attempt - 1 if attempt else int(proxy.options.get("retries", 0))
        entry = build_entry(subscription_id=subscription_id, topic_name=route.topic_name,
                            partition=partition, offset=offset, envelope=envelope, reason=reason,
                            error_message=error_message, retry_count=retry_count)
        topic_id = self.dead_letter_topic(route)
        letter = self.letter_builder(route, envelope, entry) if self.letter_builder \
            else topic_envelope(entry)
        handle = proxy.handle
        offset_out = self.scripts.dead_letter(
            keys=[handle.stream, self.keys.dead_letters(subscription_id),
                  self.keys.subscription_counters(subscription_id), self.keys.stream(topic_id, 0)],
            args=[handle.group, handle.entry_id, "1" if handle.direct else "0",
                  json.dumps(entry), raw, letter.encode()[FIELD], "1" if count_failed else "0",
                  DEAD_LETTER_CAP, self.settings.stream_max_len])
        if not offset_out:
            return None
        return {"entry": entry, "topic_id": topic_id, "offset": offset_out, "envelope": letter,
                "route": route}

    def _ack_plain(self, handle: Handle) -> None:
        self.scripts.ack(keys=[handle.stream, "-"],
                         args=[handle.group, handle.entry_id, "1" if handle.direct else "0", ""])


def ensure_pool_group(client: Redis, keys: Keys, pool: str) -> None:
    try:
        client.xgroup_create(keys.pool_stream(pool), pool, id="0", mkstream=True)
    except ResponseError as exc:
        if BUSYGROUP not in str(exc):
            raise


def release_due_retries(client: Redis, keys: Keys, pool: str, scripts: Scripts) -> int:
    """Move every due retry of `pool` into its direct stream; returns how many moved."""
    moved = 0
    while True:
        count = int(scripts.release(
            keys=[keys.retry_due(pool), keys.retry_payloads(pool), keys.pool_stream(pool)],
            args=[RELEASE_BATCH, POOL_STREAM_CAP]))
        moved += count
        if count < RELEASE_BATCH:
            return moved


@dataclass
class _Held:
    since: float
    lease_ms: int


class StreamsConsumer(Consumer):
    """The multiplexing consumer of one pool in one process (see the module docstring)."""

    def __init__(self, broker: RedisStreamsBroker, pool: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.keys = broker.keys
        self.client = broker.client
        self.wake = broker.wake_client()
        self.pool = pool
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self.pool_key = self.keys.pool_stream(pool)
        self.control_key = self.keys.control
        self.buffer: deque[StreamProxy] = deque()
        self.held: dict[Handle, _Held] = {}
        self.lock = threading.Lock()
        self.acks: list[tuple[Handle, str, str]] = []
        self.acks_lock = threading.Lock()
        self.ack_flusher = threading.Lock()
        self.room = threading.Event()  # set whenever a held entry is released
        self.stale_tips: set[str] = set()  # streams whose tip must be read before the next wait
        self.routes: dict[str, Route] = {}
        self.routes_version = -1
        self.watch: dict[str, list[str]] = {}  # topic stream -> subscription ids
        self.partition_of: dict[str, int] = {}
        self.last_seen: dict[str, str] = {}
        self.dirty: deque[str] = deque()
        self.dirty_set: set[str] = set()
        self.pool_dirty = True
        self.next_reclaim: dict[str, float] = {}
        self.next_pool_reclaim = 0.0
        self.next_reclaim_pass = 0.0
        self.last_wake = 0.0
        self.last_renew = time.monotonic()
        self.dead_workers = DeadWorkers(self.client, self.keys, broker.instance)
        self.orphaned: set[str] = set()  # dead instances whose entries are being taken over
        self.next_dead_check = 0.0
        ensure_pool_group(self.client, self.keys, pool)
        self.last_seen[self.control_key] = self._tips([self.control_key])[self.control_key]
        self.last_seen[self.pool_key] = "0-0"

    # -- the dramatiq Consumer contract -----------------------------------------------------
    def __next__(self) -> StreamProxy | None:
        try:
            return self._next()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None

    def ack(self, message: MessageProxy) -> None:
        """XACK (see `scripts.ACK_MANY`), group-committed: acks of concurrent worker threads
        that arrive while one round trip is in flight go together in the next one."""
        proxy: StreamProxy = message  # type: ignore[assignment]
        try:
            if proxy.outcome == "handback":
                try:
                    self._hand_back_one(proxy)
                finally:
                    self._release(proxy.handle)
                return
            field = COUNTER_OF_OUTCOME.get(proxy.outcome or "", "")
            with self.acks_lock:
                self.acks.append(
                    (proxy.handle, self.keys.subscription_counters(proxy.subscription_id), field))
            self._flush_acks()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None

    def _flush_acks(self) -> None:
        while self.acks and self.ack_flusher.acquire(blocking=False):
            try:
                while True:
                    with self.acks_lock:
                        batch, self.acks = self.acks, []
                    if not batch:
                        break
                    try:
                        self._ack_batch(batch)
                    except (redis.ConnectionError, redis.TimeoutError):
                        with self.acks_lock:  # kept for the next flush once Redis is back
                            self.acks[:0] = batch
                        raise
                    except Exception:
                        # Never wedge later acks behind a batch Redis refuses: these entries
                        # stay pending and are reclaimed (delivered again) after the timeout.
                        log.exception("dropping %d acks Redis refused", len(batch))
                        self._forget(batch)
            finally:
                self.ack_flusher.release()
            # An ack queued after the last look but before the release is flushed by the loop.

    def _ack_batch(self, batch: list[tuple[Handle, str, str]]) -> None:
        for start in range(0, len(batch), 500):
            chunk = batch[start:start + 500]
            keys: list[str] = []
            args: list[str] = []
            for handle, counters, field in chunk:
                keys += [handle.stream, counters]
                args += [handle.group, handle.entry_id, "1" if handle.direct else "0", field]
            self.broker.scripts.ack_many(keys=keys, args=args)
            self._forget(chunk)

    def _forget(self, acked: list[tuple[Handle, str, str]]) -> None:
        with self.lock:
            for handle, _, _ in acked:
                self.held.pop(handle, None)
        self.room.set()

    def nack(self, message: MessageProxy) -> None:
        proxy: StreamProxy = message  # type: ignore[assignment]
        try:
            exc = proxy._exception
            reason = proxy.failure_reason or getattr(exc, "reason", None) or "error"
            error = proxy.error_message or (str(exc) if exc else None)
            proxy.dead_letter = self.broker.dead_letter(
                proxy, reason=reason, error_message=error, count_failed=exc is not None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self._release(proxy.handle)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Shutdown: hand unstarted messages back at once (see `_hand_back`)."""
        proxies: list[StreamProxy] = list(messages)  # type: ignore[arg-type]
        self._hand_back([p.handle for p in proxies])
        self._announce_hand_back(proxies)

    def close(self) -> None:
        with self.lock:
            pending = list(self.buffer)
            self.buffer.clear()
        try:
            self._hand_back([p.handle for p in pending])
            self._announce_hand_back(pending)
        except redis.RedisError:
            log.warning("could not hand back %d buffered entries", len(pending))
        self.wake.close()
        if self in self.broker.consumers:
            self.broker.consumers.remove(self)

    # -- the loop --------------------------------------------------------------------------------
    def _next(self) -> StreamProxy | None:
        if self.buffer:
            return self.buffer.popleft()
        self._flush_acks()
        self._sync_routes()
        now = time.monotonic()
        if now - self.last_wake >= PEEK_S:
            self._wake(block_ms=None)
        self._maybe_renew(now)
        self._look_for_dead_workers(now)
        budget = self.prefetch - len(self.held)
        if budget <= 0:
            self.room.clear()
            if len(self.held) >= self.prefetch:
                self.room.wait(0.05)  # until an ack frees a slot
            return None
        if self.orphaned:
            self._take_over(budget - len(self.buffer))
        self._maybe_reclaim(now, budget)
        if not self.buffer:
            self._drain(budget)
        if not self.buffer:
            self._wake(block_ms=self._block_ms())
            self._sync_routes()
            self._drain(self.prefetch - len(self.held))
        return self.buffer.popleft() if self.buffer else None

    def _block_ms(self) -> int:
        """Block at most until the next lease renewal or reclaim is due."""
        now = time.monotonic()
        limit = self.timeout / 1000
        limit = min(limit, self._renew_interval() - (now - self.last_renew))
        due = min([*self.next_reclaim.values(), self.next_pool_reclaim])
        limit = min(limit, max(due, self.next_reclaim_pass) - now)
        return max(1, int(limit * 1000))

    def _sync_routes(self) -> None:
        version = self.broker.routes_version
        if version == self.routes_version:
            return
        self.routes_version = version
        old = self.routes
        self.routes = {sid: r for sid, r in self.broker.routes.items()
                       if r.pool == self.pool and r.active}
        watch: dict[str, list[str]] = {}
        for route in self.routes.values():
            for partition, key in enumerate(route.streams(self.keys)):
                watch.setdefault(key, []).append(route.subscription_id)
                self.partition_of[key] = partition
        new_keys = [k for k in watch if k not in self.last_seen]
        if new_keys:
            self.last_seen.update(self._tips(new_keys))
        for key in [k for k in self.last_seen if k not in watch
                    and k not in (self.pool_key, self.control_key)]:
            del self.last_seen[key]
        self.watch = watch
        now = time.monotonic()
        for sid, route in self.routes.items():
            before = old.get(sid)
            if before is None or before.streams(self.keys) != route.streams(self.keys):
                self._mark_dirty(sid)
                self.next_reclaim[sid] = now  # pick up handed-back entries at once
        for sid in [s for s in self.next_reclaim if s not in self.routes]:
            del self.next_reclaim[sid]
        self.dirty = deque(s for s in self.dirty if s in self.routes)
        self.dirty_set &= set(self.routes)

    def _mark_dirty(self, subscription_id: str) -> None:
        if subscription_id not in self.dirty_set:
            self.dirty_set.add(subscription_id)
            self.dirty.append(subscription_id)

    def _tips(self, keys: list[str]) -> dict[str, str]:
        pipe = self.wake.pipeline(transaction=False)
        for key in keys:
            pipe.xrevrange(key, count=1)
        return {key: (rows[0][0] if rows else "0-0")
                for key, rows in zip(keys, pipe.execute(), strict=True)}

    def _wake(self, *, block_ms: int | None) -> None:
        """One XREAD over every watched stream: marks what changed (reads nothing for real)."""
        self.last_wake = time.monotonic()
        if self.stale_tips:
            self.last_seen.update(self._tips(sorted(self.stale_tips)))
            self.stale_tips.clear()
        keys = [self.control_key, self.pool_key, *self.watch]
        streams = {key: self.last_seen.get(key, "0-0") for key in keys}
        try:
            replies = self.wake.xread(streams, count=1, block=block_ms)
        except ResponseError as exc:  # a watched stream was deleted while blocked
            log.info("wake-up read interrupted: %s", exc)
            return
        fired = [key for key, _ in (replies or [])]
        if not fired:
            return
        if self.control_key in fired:
            self._read_control()
        others = [key for key in fired if key != self.control_key]
        # The streams' tips become the next wake-up read's starting points; they are read in
        # the same round trip as the group reads (`_poll`), just before them, so an entry
        # added after the tip is read wakes the next read.
        self.stale_tips.update(others)
        for key in others:
            if key == self.pool_key:
                self.pool_dirty = True
            for sid in self.watch.get(key, ()):
                self._mark_dirty(sid)

    def _read_control(self) -> None:
        events: list[dict[str, str]] = []
        while True:
            replies = self.wake.xread({self.control_key: self.last_seen[self.control_key]},
                                      count=500)
            if not replies:
                break
            entries = replies[0][1]
            events += [fields for _, fields in entries]
            self.last_seen[self.control_key] = entries[-1][0]
            if len(entries) < 500:
                break
        if events and self.broker.control_listener is not None:
            try:
                self.broker.control_listener(events)
            except Exception:
                log.exception("applying control events failed; the periodic resync will retry")
        self._sync_routes()
        self._touch(events)

    def _touch(self, events: list[dict[str, str]]) -> None:
        """Read a changed subscription again at once (a seek moves its group without adding
        anything to the stream; a resume must pick up what was handed back)."""
        now = time.monotonic()
        sub_ids = {e.get("id") for e in events if e.get("kind") == "subscription"}
        topic_ids = {e.get("id") for e in events if e.get("kind") == "topic"}
        for sid, route in self.routes.items():
            if sid in sub_ids or route.topic_id in topic_ids:
                self._mark_dirty(sid)
                self.next_reclaim[sid] = now
                self.next_reclaim_pass = now

    def _drain(self, budget: int) -> None:
        """Read dirty subscriptions until something arrives or nothing is dirty."""
        while budget > 0 and (self.dirty or self.pool_dirty) and not self.buffer:
            self._poll(budget)

    def _poll(self, budget: int) -> None:
        order = [self.dirty.popleft() for _ in range(min(budget, len(self.dirty)))]
        for sid in order:
            self.dirty_set.discard(sid)
        readers = len(order) + (1 if self.pool_dirty else 0)
        per = max(1, budget // max(1, readers))
        pipe = self.client.pipeline(transaction=False)
        tips = sorted(self.stale_tips)
        self.stale_tips.clear()
        for key in tips:
            pipe.xrevrange(key, count=1)
        read_pool = self.pool_dirty
        if read_pool:
            pipe.xreadgroup(self.pool, self.broker.instance, {self.pool_key: ">"}, count=per)
        routes = [self.routes[sid] for sid in order if sid in self.routes]
        for route in routes:
            pipe.xreadgroup(route.group, route.consumer(self.broker.instance),
                            {key: ">" for key in route.streams(self.keys)}, count=per)
        replies = pipe.execute(raise_on_error=False)
        for key, rows in zip(tips, replies[:len(tips)], strict=True):
            if isinstance(rows, list):
                self.last_seen[key] = rows[0][0] if rows else "0-0"
        replies = replies[len(tips):]
        if read_pool:
            entries = self._entries(replies.pop(0), "pool")
            self.pool_dirty = len(entries) >= per
            for key, entry_id, fields in entries:
                self._push_direct(key, entry_id, fields)
        for route, reply in zip(routes, replies, strict=True):
            entries = self._entries(reply, route.subscription_id)
            if len(entries) >= per:
                self._mark_dirty(route.subscription_id)
            for key, entry_id, fields in entries:
                self._push_topic(route, key, entry_id, fields)

    @staticmethod
    def _entries(reply: Any, what: str) -> list[tuple[str, str, dict[str, str] | None]]:
        if isinstance(reply, Exception):
            log.warning("reading %s failed: %s", what, reply)
            return []
        return [(key, entry_id, fields) for key, rows in (reply or []) for entry_id, fields in rows]

    def _hold(self, handle: Handle, lease_ms: int) -> None:
        with self.lock:
            self.held[handle] = _Held(time.monotonic(), lease_ms)

    def _release(self, handle: Handle) -> None:
        with self.lock:
            self.held.pop(handle, None)
        self.room.set()

    def _push_topic(self, route: Route, key: str, entry_id: str,
                    fields: dict[str, str] | None) -> None:
        handle = Handle(key, route.group, entry_id, route.consumer(self.broker.instance), False)
        if not fields or FIELD not in fields:  # trimmed while pending: nothing to deliver
            self.broker._ack_plain(handle)
            return
        message = delivery_message(self.pool, route.subscription_id, self.partition_of.get(key, 0),
                                   entry_id, fields[FIELD],
                                   options={"max_retries": route.max_retry_attempts})
        self._hold(handle, route.session_timeout_ms)
        self.buffer.append(StreamProxy(message, handle, route.subscription_id))

    def _push_direct(self, key: str, entry_id: str, fields: dict[str, str] | None) -> None:
        handle = Handle(key, self.pool, entry_id, self.broker.instance, True)
        try:
            message = Message.decode(fields["d"].encode()) if fields else None
        except Exception:
            log.exception("undecodable entry %s on %s dropped", entry_id, key)
            message = None
        if message is None:
            self.broker._ack_plain(handle)
            return
        subscription_id = str(message.args[0]) if message.args else ""
        route = self.broker.route(subscription_id)
        self._hold(handle, route.session_timeout_ms if route else self._pool_lease_ms())
        self.buffer.append(StreamProxy(message, handle, subscription_id))

    # -- leases, reclaim, hand-back ------------------------------------------------------------
    def _pool_lease_ms(self) -> int:
        timeouts = [r.session_timeout_ms for r in self.routes.values()]
        return max(1000, min(timeouts)) if timeouts else 30_000

    def _renew_interval(self) -> float:
        with self.lock:
            leases = [h.lease_ms for h in self.held.values()]
        return max(0.1, min(leases or [30_000]) / 3000)

    def _maybe_renew(self, now: float) -> None:
        if now - self.last_renew < self._renew_interval():
            return
        self.last_renew = now
        with self.lock:
            handles = [h for h, held in self.held.items() if now - held.since < MAX_LEASE_S]
        for start in range(0, len(handles), 200):
            chunk = handles[start:start + 200]
            args: list[str] = []
            for handle in chunk:
                args += [handle.group, handle.entry_id, handle.consumer]
            lost = self.broker.scripts.renew(keys=[h.stream for h in chunk], args=args)
            if lost:
                log.warning("%d held entries were taken over by another worker", len(lost))

    def _maybe_reclaim(self, now: float, budget: int) -> None:
        """Reclaim passes run at most every `RECLAIM_PASS_S` and pipeline every due group, so
        thousands of subscriptions cost a few round trips a second, not one each."""
        if now < self.next_reclaim_pass:
            return
        self.next_reclaim_pass = now + RECLAIM_PASS_S
        due = [sid for sid, at in self.next_reclaim.items() if at <= now]
        if due:
            self._reclaim_topics(now, due, budget)
        if now >= self.next_pool_reclaim and len(self.buffer) < budget:
            self.next_pool_reclaim = now + self._pool_lease_ms() / 2000
            self._reclaim([(self.pool_key, self.pool, self.broker.instance, None)],
                          self._pool_lease_ms(), budget - len(self.buffer))

    def _look_for_dead_workers(self, now: float) -> None:
        """Note the workers whose heartbeat stopped (`broker.takeover`); their entries are
        taken over as room allows."""
        if now < self.next_dead_check:
            return
        self.next_dead_check = now + CHECK_S
        dead = self.dead_workers.newly_dead()
        if dead:
            log.warning("worker(s) %s stopped beating: taking over their entries",
                        ", ".join(sorted(dead)))
        self.orphaned |= dead

    def _take_over(self, room: int) -> None:
        """Claim the orphaned instances' pending entries on the pool stream and on every
        stream of this pool's subscriptions; instances with entries left stay orphaned."""
        if room <= 0:
            return
        mine = self.broker.instance
        jobs: list[tuple[str, str, str, str, Route | None, str]] = []
        for instance in self.orphaned:
            jobs.append((self.pool_key, self.pool, instance, mine, None, instance))
            for route in self.routes.values():
                jobs += [(key, route.group, route.consumer(instance), route.consumer(mine),
                          route, instance) for key in route.streams(self.keys)]
        count = max(1, min(100, room // len(jobs)))
        left: set[str] = set()
        for start in range(0, len(jobs), RECLAIM_PIPELINE):
            chunk = jobs[start:start + RECLAIM_PIPELINE]
            taken = take_pending(self.client, [job[:4] for job in chunk], count)
            for (key, group, _, heir, route, instance), (entries, more) in zip(
                    chunk, taken, strict=True):
                self._claimed(key, group, heir, route, ("0-0", entries))
                if more:
                    left.add(instance)
        self.orphaned = left

    def _reclaim_topics(self, now: float, due: list[str], budget: int) -> None:
        by_timeout: dict[int, list[tuple[str, str, str, Route | None]]] = {}
        for sid in due:
            route = self.routes.get(sid)
            if route is None:
                self.next_reclaim.pop(sid, None)
                continue
            self.next_reclaim[sid] = now + route.session_timeout_ms / 2000
            consumer = route.consumer(self.broker.instance)
            by_timeout.setdefault(route.session_timeout_ms, []).extend(
                (key, route.group, consumer, route) for key in route.streams(self.keys))
        for timeout_ms, jobs in by_timeout.items():
            for start in range(0, len(jobs), RECLAIM_PIPELINE):
                room = budget - len(self.buffer)
                if room <= 0:  # full: the rest is looked at again on the next pass
                    for _, _, _, route in jobs[start:]:
                        if route is not None:
                            self.next_reclaim[route.subscription_id] = now
                    return
                self._reclaim(jobs[start:start + RECLAIM_PIPELINE], timeout_ms, room)

    def _reclaim(self, jobs: list[tuple[str, str, str, Route | None]], min_idle_ms: int,
                 room: int) -> None:
        """XAUTOCLAIM entries idle for `min_idle_ms` on each (stream, group, consumer, route);
        `route` None means the pool's direct stream. A group with more idle entries than were
        taken is looked at again on the next pass (`RECLAIM_PASS_S`)."""
        count = max(1, min(100, room // len(jobs)))
        pipe = self.client.pipeline(transaction=False)
        for key, group, consumer, _ in jobs:
            pipe.xautoclaim(key, group, consumer, min_idle_ms, "0-0", count=count)
        for (key, group, consumer, route), reply in zip(jobs, pipe.execute(raise_on_error=False),
                                                        strict=True):
            if isinstance(reply, Exception):
                log.info("reclaim on %s skipped: %s", key, reply)
                continue
            self._claimed(key, group, consumer, route, reply)
            if reply[0] not in ("0-0", b"0-0"):  # more idle entries: look again next pass
                self._reclaim_again(route)

    def _reclaim_again(self, route: Route | None) -> None:
        """Orphaned entries come back as fast as there is room for them, not a batch each
        half session timeout."""
        if route is None:
            self.next_pool_reclaim = 0.0
        else:
            self.next_reclaim[route.subscription_id] = 0.0

    def _claimed(self, key: str, group: str, consumer: str, route: Route | None,
                 reply: Any) -> None:
        claimed = [(entry_id, fields) for entry_id, fields in reply[1]]
        for entry_id in (reply[2] if len(reply) > 2 else []):
            log.info("entry %s of %s was trimmed while pending", entry_id, key)
        if not claimed:
            return
        counts = self._delivery_counts(key, group, [entry_id for entry_id, _ in claimed])
        log.info("reclaimed %d entries of %s for %s", len(claimed), key, consumer)
        for entry_id, fields in claimed:
            if route is None:
                self._push_direct(key, entry_id, fields)
            else:
                self._push_topic(route, key, entry_id, fields)
            if counts.get(entry_id, 0) > self.broker.max_deliveries and self.buffer \
                    and self.buffer[-1].handle.entry_id == entry_id:
                self._poison(self.buffer.pop())

    def _delivery_counts(self, key: str, group: str, ids: list[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in pipe.execute(raise_on_error=False):
            if isinstance(rows, list) and rows:
                counts[rows[0]["message_id"]] = int(rows[0]["times_delivered"])
        return counts

    def _poison(self, proxy: StreamProxy) -> None:
        """An entry that kept killing its worker: dead-letter it without running it again."""
        log.warning("entry %s of %s delivered more than %d times: dead-lettering",
                    proxy.handle.entry_id, proxy.handle.stream, self.broker.max_deliveries)
        proxy.fail()
        proxy.failure_reason = "max_deliveries"
        proxy.error_message = (f"delivered more than {self.broker.max_deliveries} times without "
                               "finishing (the worker died each time)")
        self.broker.emit_before("nack", proxy)
        self.nack(proxy)
        self.broker.emit_after("nack", proxy)

    def _hand_back_one(self, proxy: StreamProxy) -> None:
        if proxy.handle.direct:
            # A parked retry waits in the retry set again rather than circling the pool stream.
            self.broker.enqueue(proxy, delay=1000)
            self.broker._ack_plain(proxy.handle)
        else:
            self._hand_back([proxy.handle])

    def _announce_hand_back(self, proxies: list[StreamProxy]) -> None:
        """Tell every worker to reclaim these subscriptions now, not at their next pass."""
        for subscription_id in {p.subscription_id for p in proxies if not p.handle.direct}:
            announce(self.client, self.keys, "subscription", subscription_id, "upsert")

    def _hand_back(self, handles: list[Handle]) -> None:
        """Give entries back at once: park them on the abandoned consumer, idle "forever"."""
        groups: dict[tuple[str, str], list[str]] = {}
        for handle in handles:
            groups.setdefault((handle.stream, handle.group), []).append(handle.entry_id)
        if groups:
            pipe = self.client.pipeline(transaction=False)
            for (stream, group), ids in groups.items():
                pipe.xclaim(stream, group, ABANDONED_CONSUMER, 0, ids, idle=ABANDONED_IDLE_MS,
                            justid=True)
            pipe.execute(raise_on_error=False)
        for handle in handles:
            self._release(handle)


__all__ = ["DEFAULT_POOL", "Handle", "RedisStreamsBroker", "StreamProxy", "StreamsConsumer",
           "release_due_retries"]
