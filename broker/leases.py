"""Leases on the entries a pool consumer holds, and taking back entries whose lease ran out.

An entry read with XREADGROUP stays pending on its consumer until it is acknowledged. The
consumer holding it renews its lease (`lease_renew.lua`: XCLAIM JUSTID, only while it still
owns the entry) every third of the subscription's `session_timeout_ms`, for at most
`MAX_LEASE_S` (a thread stuck where no time limit reaches it). Every consumer reclaims entries
idle for longer than the timeout (`XAUTOCLAIM`): a dead worker's deliveries go to a live one.
Sooner than that, the pending entries of a worker whose heartbeat stopped are taken over at
once (`broker.takeover`). On shutdown, unstarted entries are handed back: parked on the
`abandoned` consumer with a huge idle time, so the next reclaim pass anywhere takes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from redis.typing import StreamIdT as StreamId

from broker.connection import RedisClient
from broker.delivery import ABANDONED_CONSUMER, Route
from broker.keys import Keys
from broker.proxy import Handle
from broker.scripts import LuaScript
from broker.takeover import CHECK_S, DeadWorkers, take_pending

log = logging.getLogger(__name__)

#: Idle time given to handed-back entries: "forever", so any reclaim pass takes them.
ABANDONED_IDLE_MS = 10**12
#: Stop renewing a lease after this long (a thread stuck where no time limit reaches it).
MAX_LEASE_S = 660.0
#: Entries renewed per script call.
RENEW_CHUNK = 200
#: Reclaim passes run at most this often (each due group is looked at every half timeout).
RECLAIM_PASS_S = 0.25
#: XAUTOCLAIM commands per pipelined round trip.
RECLAIM_PIPELINE = 100
#: Lease of a pool's direct entries when the pool serves no subscription.
DEFAULT_LEASE_MS = 30_000

#: An entry as read: its id and fields (None when it was trimmed while pending).
Entry = tuple[str, dict[str, str] | None]
#: One reclaim: stream, group, consumer, and the route (None: the pool's direct stream).
Job = tuple[str, str, str, Route | None]
#: Takes what was reclaimed: stream, route (None: direct), entries, delivery count by id.
ClaimSink = Callable[[str, Route | None, Sequence[Entry], dict[str, int]], None]


def pool_lease_ms(routes: Iterable[Route]) -> int:
    """The lease of a pool's direct entries: the shortest session timeout it serves."""
    timeouts = [route.session_timeout_ms for route in routes]
    return max(1000, min(timeouts)) if timeouts else DEFAULT_LEASE_MS


@dataclass
class _Held:
    since: float
    lease_ms: int


class Leases:
    """The entries one consumer holds (read, queued, running or being acked)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._renew = LuaScript(redis, "broker", "lease_renew")
        self._held: dict[Handle, _Held] = {}
        self._lock = threading.Lock()
        self._room = threading.Event()  # set whenever a held entry is released
        self.last_renew = time.monotonic()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, handle: Handle, lease_ms: int) -> None:
        with self._lock:
            self._held[handle] = _Held(time.monotonic(), lease_ms)

    def release(self, handles: Iterable[Handle]) -> None:
        with self._lock:
            for handle in handles:
                self._held.pop(handle, None)
        self._room.set()

    def wait_for_room(self, limit: int) -> None:
        """Wait a little for an ack to free a slot while `limit` entries or more are held."""
        self._room.clear()
        if len(self._held) >= limit:
            self._room.wait(0.05)

    def renew_interval(self) -> float:
        """A third of the shortest lease held, in seconds."""
        with self._lock:
            leases = [held.lease_ms for held in self._held.values()]
        return max(0.1, min(leases or [DEFAULT_LEASE_MS]) / 3000)

    def renew_if_due(self, now: float) -> None:
        if now - self.last_renew < self.renew_interval():
            return
        self.last_renew = now
        with self._lock:
            handles = [h for h, held in self._held.items() if now - held.since < MAX_LEASE_S]
        by_stream: dict[str, list[Handle]] = {}
        for handle in handles:
            by_stream.setdefault(handle.stream, []).append(handle)
        pipe = self.redis.pipeline(transaction=False)
        for stream, held in by_stream.items():
            for start in range(0, len(held), RENEW_CHUNK):
                args: list[str] = []
                for handle in held[start:start + RENEW_CHUNK]:
                    args += [handle.group, handle.entry_id, handle.consumer]
                self._renew.queue(pipe, [stream], args)
        lost = sum(len(ids) for ids in pipe.execute()) if len(pipe) else 0
        if lost:
            log.warning("%d held entries were taken over by another worker", lost)

    def hand_back(self, handles: list[Handle]) -> None:
        """Give entries back at once: park them on the abandoned consumer, idle "forever"."""
        groups: dict[tuple[str, str], list[StreamId]] = {}
        for handle in handles:
            groups.setdefault((handle.stream, handle.group), []).append(handle.entry_id)
        if groups:
            pipe = self.redis.pipeline(transaction=False)
            for (stream, group), ids in groups.items():
                pipe.xclaim(stream, group, ABANDONED_CONSUMER, 0, ids,
                            idle=ABANDONED_IDLE_MS, justid=True)
            pipe.execute(raise_on_error=False)
        self.release(handles)


class Reclaimer:
    """Finds the entries of one pool's subscriptions whose lease ran out, or whose worker
    died, and hands them to `sink` (the consumer) as room allows."""

    def __init__(self, redis: RedisClient, keys: Keys, pool: str, instance: str, *,
                 batch_size: int, sink: ClaimSink) -> None:
        self.redis = redis
        self.keys = keys
        self.pool = pool
        self.pool_key = keys.pool_stream(pool)
        self.instance = instance
        self.batch_size = batch_size
        self.sink = sink
        self.next_reclaim: dict[str, float] = {}  # subscription id -> next look (monotonic)
        self.next_pool_reclaim = 0.0
        self.next_pass = 0.0
        self.dead_workers = DeadWorkers(redis, keys, instance)
        self.orphaned: set[str] = set()  # dead instances whose entries are being taken over
        self.next_dead_check = 0.0

    # -- when ------------------------------------------------------------------------------
    def look_at(self, subscription_id: str, at: float) -> None:
        self.next_reclaim[subscription_id] = at

    def pass_at(self, at: float) -> None:
        self.next_pass = at

    def keep_only(self, routes: dict[str, Route]) -> None:
        for sid in [s for s in self.next_reclaim if s not in routes]:
            del self.next_reclaim[sid]

    def next_due(self) -> float:
        """When the next reclaim pass has something to do (monotonic seconds)."""
        due = min([*self.next_reclaim.values(), self.next_pool_reclaim])
        return max(due, self.next_pass)

    # -- dead workers --------------------------------------------------------------------------
    def look_for_dead_workers(self, now: float) -> None:
        """Note the workers whose heartbeat stopped (`broker.takeover`); their entries are
        taken over as room allows."""
        if now < self.next_dead_check:
            return
        self.next_dead_check = now + CHECK_S
        dead = self.dead_workers.newly_dead()
        if dead - self.orphaned:
            log.warning("worker(s) %s stopped beating: taking over their entries",
                        ", ".join(sorted(dead - self.orphaned)))
        self.orphaned |= dead

    def take_over(self, routes: dict[str, Route], room: int) -> None:
        """Claim the orphaned instances' pending entries on the pool stream and on every
        stream of this pool's subscriptions; instances with entries left stay orphaned."""
        if not self.orphaned or room <= 0:
            return
        mine = self.instance
        jobs: list[tuple[str, str, str, str, Route | None, str]] = []
        for instance in self.orphaned:
            jobs.append((self.pool_key, self.pool, instance, mine, None, instance))
            for route in routes.values():
                jobs += [(key, route.group, route.consumer(instance), route.consumer(mine),
                          route, instance) for key in route.streams(self.keys)]
        count = max(1, min(self.batch_size, room // len(jobs)))
        left: set[str] = set()
        for start in range(0, len(jobs), RECLAIM_PIPELINE):
            chunk = jobs[start:start + RECLAIM_PIPELINE]
            taken = take_pending(self.redis, [job[:4] for job in chunk], count)
            for (key, group, _, heir, claimed_for, instance), (entries, more) in zip(
                    chunk, taken, strict=True):
                self._claimed(key, group, heir, claimed_for, entries)
                if more:
                    left.add(instance)
        self.orphaned = left

    # -- expired leases --------------------------------------------------------------------------
    def reclaim_if_due(self, now: float, routes: dict[str, Route],
                       room: Callable[[], int]) -> None:
        """Reclaim passes run at most every `RECLAIM_PASS_S` and pipeline every due group, so
        thousands of subscriptions cost a few round trips a second, not one each."""
        if now < self.next_pass:
            return
        self.next_pass = now + RECLAIM_PASS_S
        due = [sid for sid, at in self.next_reclaim.items() if at <= now]
        if due:
            self._reclaim_topics(now, due, routes, room)
        if now >= self.next_pool_reclaim and room() > 0:
            lease_ms = pool_lease_ms(routes.values())
            self.next_pool_reclaim = now + lease_ms / 2000
            self._reclaim([(self.pool_key, self.pool, self.instance, None)], lease_ms, room())

    def _reclaim_topics(self, now: float, due: list[str], routes: dict[str, Route],
                        room: Callable[[], int]) -> None:
        by_timeout: dict[int, list[Job]] = {}
        for sid in due:
            route = routes.get(sid)
            if route is None:
                self.next_reclaim.pop(sid, None)
                continue
            self.next_reclaim[sid] = now + route.session_timeout_ms / 2000
            consumer = route.consumer(self.instance)
            by_timeout.setdefault(route.session_timeout_ms, []).extend(
                (key, route.group, consumer, route) for key in route.streams(self.keys))
        for timeout_ms, jobs in by_timeout.items():
            for start in range(0, len(jobs), RECLAIM_PIPELINE):
                if room() <= 0:  # full: the rest is looked at again on the next pass
                    for _, _, _, waiting in jobs[start:]:
                        if waiting is not None:
                            self.next_reclaim[waiting.subscription_id] = now
                    return
                self._reclaim(jobs[start:start + RECLAIM_PIPELINE], timeout_ms, room())

    def _reclaim(self, jobs: list[Job], min_idle_ms: int, room: int) -> None:
        """XAUTOCLAIM entries idle for `min_idle_ms` on each job. A group with more idle
        entries than were taken is looked at again on the next pass (`RECLAIM_PASS_S`)."""
        count = max(1, min(self.batch_size, room // len(jobs)))
        pipe = self.redis.pipeline(transaction=False)
        for key, group, consumer, _ in jobs:
            pipe.xautoclaim(key, group, consumer, min_idle_ms, "0-0", count=count)
        for (key, group, consumer, route), reply in zip(jobs, pipe.execute(raise_on_error=False),
                                                        strict=True):
            if isinstance(reply, Exception):
                log.info("reclaim on %s skipped: %s", key, reply)
                continue
            for entry_id in (reply[2] if len(reply) > 2 else []):
                log.info("entry %s of %s was trimmed while pending", entry_id, key)
            self._claimed(key, group, consumer, route, reply[1])
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
                 entries: Sequence[Entry]) -> None:
        if not entries:
            return
        counts = self._delivery_counts(key, group, [entry_id for entry_id, _ in entries])
        log.info("reclaimed %d entries of %s for %s", len(entries), key, consumer)
        self.sink(key, route, entries, counts)

    def _delivery_counts(self, key: str, group: str, ids: list[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in pipe.execute(raise_on_error=False):
            if isinstance(rows, list) and rows:
                counts[rows[0]["message_id"]] = int(rows[0]["times_delivered"])
        return counts
