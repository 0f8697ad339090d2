"""The multiplexing consumer of one pool in one worker process.

Dramatiq queues are *pools* (a handful per deployment), not subscriptions: a dramatiq queue
costs a consumer thread, and one process must serve thousands of subscriptions. The pool's
`RedisStreamsConsumer` serves every subscription routed to the pool:

- it learns which streams changed with ONE blocking `XREAD` (no group, a wake-up signal only)
  over the watched topic streams, the pool's direct stream and the control stream, on its own
  connection (on a Redis Cluster, one per hash slot, waited on together: `broker.wake`);
- it then reads the changed ("dirty") subscriptions' consumer groups with pipelined,
  non-blocking `XREADGROUP`, round-robin, within the prefetch budget (buffered + queued +
  running entries) and at most `MESSAGE_BATCH_SIZE` entries per stream read, and never
  blocks while a subscription is still dirty; while busy it peeks (non-blocking XREAD) every
  `PEEK_S` so control events and cold subscriptions are not starved;
- it renews the leases of the entries it holds, reclaims those whose lease ran out or whose
  worker died, and hands unstarted entries back on shutdown (`broker.leases`); an entry
  delivered more than `max_deliveries` times (it kept killing its worker) is dead-lettered
  as `max_deliveries`;
- it releases its pool's due retries and delayed messages (`broker.retries.Releaser`), so a
  broker used without the service's scheduler still runs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from dramatiq import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed

from broker import handback, messages
from broker.acks import AckBatcher
from broker.connection import close_client
from broker.delivery import Route, delivery_message, is_delivery
from broker.envelope import FIELD
from broker.leases import Entry, Leases, Reclaimer, pool_lease_ms
from broker.outcomes import DeliveryOutcome
from broker.pools import START, PoolBroker, ensure_pool_group
from broker.proxy import Handle, StreamProxy
from broker.retries import Releaser
from broker.wake import waker_for

log = logging.getLogger(__name__)

#: How often a busy consumer still looks for new entries, control events and cold streams.
PEEK_S = 0.2
#: Control events read per XREAD.
CONTROL_PAGE = 500


class RedisStreamsConsumer(Consumer):
    """See the module docstring."""

    def __init__(self, broker: PoolBroker, pool: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.keys = broker.keys
        self.client = broker.client
        self.wake = broker.wake_client()
        self.waker = waker_for(self.wake)
        self.pool = pool
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self.batch_size = broker.settings.message_batch_size
        self.pool_key = self.keys.pool_stream(pool)
        self.control_key = self.keys.control
        self.buffer: deque[StreamProxy] = deque()
        self.buffer_lock = threading.Lock()
        self.leases = Leases(self.client)
        self.acks = AckBatcher(self.client, self.leases)
        self.reclaimer = Reclaimer(self.client, self.keys, pool, broker.instance,
                                   batch_size=self.batch_size, sink=self._claimed)
        self.stale_tips: set[str] = set()  # streams whose tip must be read before the next wait
        self.routes: dict[str, Route] = {}
        self.routes_version = -1
        self.watch: dict[str, list[str]] = {}  # topic stream -> subscription ids
        self.partition_of: dict[str, int] = {}
        self.last_seen: dict[str, str] = {}
        self.dirty: deque[str] = deque()
        self.dirty_set: set[str] = set()
        self.pool_dirty = True
        self.last_wake = 0.0
        self.releaser = Releaser(broker.retries, pool)
        ensure_pool_group(self.client, self.keys, pool)
        self.last_seen[self.control_key] = broker.control_seen or \
            self._tips([self.control_key])[self.control_key]
        self.last_seen[self.pool_key] = START

    # -- the dramatiq Consumer contract -----------------------------------------------------
    def __next__(self) -> StreamProxy | None:
        try:
            return self._next()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None

    def ack(self, message: MessageProxy) -> None:
        """Queue the ack with the outcome's counter and flush (`AckBatcher`); a handed-back
        delivery is given back instead."""
        proxy = StreamProxy.of(message)
        try:
            if proxy.outcome is DeliveryOutcome.HANDED_BACK:
                try:
                    handback.hand_back_paused(self.broker, self.leases, proxy)
                finally:
                    self.leases.release([proxy.handle])
                return
            counter = proxy.outcome.counter if proxy.outcome is not None else ""
            self.acks.add(proxy.handle, self.keys.subscription_counters(proxy.subscription_id),
                          counter)
            self.acks.flush()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter: a subscription's delivery into its dead-letter store and topic (the
        service's way), any other actor's message into its pool's dead-letter stream."""
        proxy = StreamProxy.of(message)
        try:
            exc = proxy._exception
            if not proxy.subscription_id:
                self.broker.dead_letter_direct(proxy, proxy.failure_text())
                return
            reason = proxy.failure_reason or getattr(exc, "reason", None) or "error"
            error = proxy.error_message or (str(exc) if exc else None)
            proxy.dead_letter = self.broker.dead_letter(
                proxy, reason=reason, error_message=error, count_failed=exc is not None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self.leases.release([proxy.handle])

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Shutdown: give unstarted messages back at once (`broker.handback`)."""
        try:
            handback.give_back(self.broker, self.leases,
                               [StreamProxy.of(message) for message in messages])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None

    def close(self) -> None:
        with self.buffer_lock:
            pending = list(self.buffer)
            self.buffer.clear()
        try:
            handback.give_back(self.broker, self.leases, pending)
        except redis.RedisError:
            log.warning("could not hand back %d buffered entries", len(pending))
        self.waker.close()
        close_client(self.wake)
        self.broker.consumer_closed(self)

    # -- the loop --------------------------------------------------------------------------------
    def _next(self) -> StreamProxy | None:
        if self.buffer:
            return self.buffer.popleft()
        self.acks.flush()
        self._sync_routes()
        now = time.monotonic()
        if now - self.last_wake >= PEEK_S:
            self._wake(block_ms=None)
        self.leases.renew_if_due(now)
        if self.releaser.release_if_due(now):
            self.pool_dirty = True
        self.reclaimer.look_for_dead_workers(now)
        budget = self.prefetch - len(self.leases)
        if budget <= 0:
            self.leases.wait_for_room(self.prefetch)
            return None

        def room() -> int:
            return budget - len(self.buffer)

        self.reclaimer.take_over(self.routes, room())
        self.reclaimer.reclaim_if_due(now, self.routes, room)
        if not self.buffer:
            self._drain(budget)
        if not self.buffer:
            self._wake(block_ms=self._block_ms())
            self._sync_routes()
            self._drain(self.prefetch - len(self.leases))
        return self.buffer.popleft() if self.buffer else None

    def _block_ms(self) -> int:
        """Block at most until the next lease renewal or reclaim is due."""
        now = time.monotonic()
        limit = self.timeout / 1000
        limit = min(limit, self.leases.renew_interval() - (now - self.leases.last_renew))
        limit = min(limit, self.reclaimer.next_due() - now, self.releaser.at - now)
        return max(1, int(limit * 1000))

    def _sync_routes(self) -> None:
        version = self.broker.routes.version
        if version == self.routes_version:
            return
        self.routes_version = version
        old = self.routes
        self.routes = {sid: r for sid, r in self.broker.routes.all().items()
                       if r.pool == self.pool and r.active}
        self._watch_streams()
        now = time.monotonic()
        for sid, route in self.routes.items():
            before = old.get(sid)
            if before is None or before.streams(self.keys) != route.streams(self.keys):
                self._mark_dirty(sid)
                self.reclaimer.look_at(sid, now)  # pick up handed-back entries at once
        self.reclaimer.keep_only(self.routes)
        self.dirty = deque(s for s in self.dirty if s in self.routes)
        self.dirty_set &= set(self.routes)

    def _watch_streams(self) -> None:
        """Watch the streams of the current routes, from their tips for new ones."""
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

    def _mark_dirty(self, subscription_id: str) -> None:
        if subscription_id not in self.dirty_set:
            self.dirty_set.add(subscription_id)
            self.dirty.append(subscription_id)

    def _tips(self, keys: list[str]) -> dict[str, str]:
        pipe = self.wake.pipeline(transaction=False)
        for key in keys:
            pipe.xrevrange(key, count=1)
        return {key: (rows[0][0] if rows else START)
                for key, rows in zip(keys, pipe.execute(), strict=True)}

    def _wake(self, *, block_ms: int | None) -> None:
        """One XREAD over every watched stream: marks what changed (reads nothing for real)."""
        self.last_wake = time.monotonic()
        if self.stale_tips:
            self.last_seen.update(self._tips(sorted(self.stale_tips)))
            self.stale_tips.clear()
        keys = [self.control_key, self.pool_key, *self.watch]
        streams: dict[Any, Any] = {key: self.last_seen.get(key, START) for key in keys}
        fired = self.waker.wait(streams, block_ms)
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
            streams: dict[Any, Any] = {self.control_key: self.last_seen[self.control_key]}
            replies: Any = self.wake.xread(streams, count=CONTROL_PAGE)
            if not replies:
                break
            entries = replies[0][1]
            events += [fields for _, fields in entries]
            self.last_seen[self.control_key] = self.broker.control_seen = entries[-1][0]
            if len(entries) < CONTROL_PAGE:
                break
        if events:
            try:
                self.broker.hooks.apply_control_events(events)
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
                self.reclaimer.look_at(sid, now)
                self.reclaimer.pass_at(now)

    # -- reading -------------------------------------------------------------------------------
    def _drain(self, budget: int) -> None:
        """Read dirty subscriptions until something arrives or nothing is dirty."""
        while budget > 0 and (self.dirty or self.pool_dirty) and not self.buffer:
            self._poll(budget)

    def _poll(self, budget: int) -> None:
        order = [self.dirty.popleft() for _ in range(min(budget, len(self.dirty)))]
        for sid in order:
            self.dirty_set.discard(sid)
        readers = len(order) + (1 if self.pool_dirty else 0)
        per = max(1, min(self.batch_size, budget // max(1, readers)))
        pipe = self.client.pipeline(transaction=False)
        tips = sorted(self.stale_tips)
        self.stale_tips.clear()
        for key in tips:
            pipe.xrevrange(key, count=1)
        read_pool = self.pool_dirty
        if read_pool:
            pipe.xreadgroup(self.pool, self.broker.instance, {self.pool_key: ">"}, count=per)
        routes = [self.routes[sid] for sid in order if sid in self.routes]
        reads = [(route, keys) for route in routes
                 for keys in self.waker.groups(route.streams(self.keys))]
        for route, keys in reads:
            pipe.xreadgroup(route.group, route.consumer(self.broker.instance),
                            {key: ">" for key in keys}, count=per)
        replies = pipe.execute(raise_on_error=False)
        for key, rows in zip(tips, replies[:len(tips)], strict=True):
            if isinstance(rows, list):
                self.last_seen[key] = rows[0][0] if rows else START
        replies = replies[len(tips):]
        if read_pool:
            entries = self._entries(replies.pop(0), "pool")
            self.pool_dirty = len(entries) >= per
            for key, entry_id, fields in entries:
                self._push_direct(key, entry_id, fields)
        for (route, _), reply in zip(reads, replies, strict=True):
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

    def _push_topic(self, route: Route, key: str, entry_id: str,
                    fields: dict[str, str] | None) -> None:
        handle = Handle(key, route.group, entry_id, route.consumer(self.broker.instance), False)
        if not fields or FIELD not in fields:  # trimmed while pending: nothing to deliver
            self.broker.ack_plain(handle)
            return
        message = delivery_message(self.pool, route.subscription_id, self.partition_of.get(key, 0),
                                   entry_id, fields[FIELD],
                                   options={"max_retries": route.max_retry_attempts})
        self.leases.hold(handle, route.session_timeout_ms)
        self.buffer.append(StreamProxy(message, handle, route.subscription_id))

    def _push_direct(self, key: str, entry_id: str, fields: dict[str, str] | None) -> None:
        handle = Handle(key, self.pool, entry_id, self.broker.instance, True)
        try:
            message = messages.decode(fields["d"]) if fields else None
        except Exception:
            log.exception("undecodable entry %s on %s dropped", entry_id, key)
            message = None
        if message is None:
            self.broker.ack_plain(handle)
            return
        subscription_id = str(message.args[0]) if is_delivery(message) else ""
        route = self.broker.routes.get(subscription_id)
        lease_ms = route.session_timeout_ms if route else pool_lease_ms(self.routes.values())
        self.leases.hold(handle, lease_ms)
        self.buffer.append(StreamProxy(message, handle, subscription_id))

    # -- reclaimed entries and hand-back ---------------------------------------------------------
    def _claimed(self, key: str, route: Route | None, entries: Sequence[Entry],
                 counts: dict[str, int]) -> None:
        """Buffer reclaimed entries; one delivered too often is dead-lettered instead."""
        for entry_id, fields in entries:
            if route is None:
                self._push_direct(key, entry_id, fields)
            else:
                self._push_topic(route, key, entry_id, fields)
            if counts.get(entry_id, 0) > self.broker.max_deliveries and self.buffer \
                    and self.buffer[-1].handle.entry_id == entry_id:
                self._poison(self.buffer.pop())

    def _poison(self, proxy: StreamProxy) -> None:
        """An entry that kept killing its worker: dead-letter it without running it again."""
        limit = self.broker.max_deliveries
        log.warning("entry %s of %s delivered more than %d times: dead-lettering",
                    proxy.handle.entry_id, proxy.handle.stream, limit)
        proxy.fail()
        proxy.failure_reason = "max_deliveries"
        proxy.error_message = (f"delivered more than {limit} times without "
                               "finishing (the worker died each time)")
        self.broker.emit_before("nack", proxy)
        self.nack(proxy)
        self.broker.emit_after("nack", proxy)
