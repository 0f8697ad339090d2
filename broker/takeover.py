"""Taking over the pending entries of a worker that died, as soon as its heartbeat stops.

Without this, a SIGKILLed worker's entries wait for the subscription's `session_timeout_ms`
(30 s by default) before a reclaim pass (`XAUTOCLAIM`) hands them to a live worker. But the
fleet knows sooner: every worker renews `Keys.worker_alive(<instance>)` with each heartbeat
(every second), with an expiry of `WORKER_DEAD_AFTER_MS` (3 s by default) counted by the
Redis server's clock, so no host's clock matters. A consumer that saw an instance alive and
then finds its key gone claims that instance's pending entries on every stream and pool it
serves itself, whatever their idle time. A worker on the consumer's own node (same kernel
boot and pid namespace, `heartbeats.local_node`) whose pid is gone is dead at once, without
waiting for its key to expire. `session_timeout_ms` stays the bound for a live worker whose
handler hangs.

Race-free: survivors claim with `XCLAIM … <min idle>`, and an entry one survivor claimed
has just been reset to idle 0, so a second survivor's claim of it does nothing. An instance
that was only slow (its key expired while it was stalled) loses the entries that were idle
long enough; it finishes what it was running, its late acknowledgement removes the entry
from the group's pending list, and the survivor's acknowledgement of the same entry then
counts nothing (the ack scripts count only an entry that was still pending): a duplicate
delivery at worst, never a loss or a double count.
"""

from __future__ import annotations

import json
import time
from typing import Any

from broker.connection import RedisClient
from broker.heartbeats import local_node, process_gone
from broker.keys import Keys

#: How often a consumer looks for workers that stopped beating.
CHECK_S = 0.5
#: Entries idle for less than this are left alone: another survivor has just claimed them
#: (a dead worker renewed nothing for at least its dead-after time).
MIN_IDLE_MS = 1000


#: An instance whose process is seen gone is reported on every look for this long: entries it
#: read just before it died are claimable only once idle for `MIN_IDLE_MS`.
GONE_REPORTED_S = MIN_IDLE_MS / 1000 + 2 * CHECK_S


class DeadWorkers:
    """Worker instances seen alive by this process whose heartbeat has since stopped."""

    def __init__(self, redis: RedisClient, keys: Keys, own_instance: str) -> None:
        self.redis = redis
        self.keys = keys
        self.own_instance = own_instance
        self.node = local_node()
        self.alive: set[str] = set()
        #: Instances whose process is gone from this node -> when that was first seen.
        self.gone: dict[str, float] = {}

    def newly_dead(self) -> set[str]:
        """Instances alive at the previous look and gone now (this process excluded)."""
        beats = self._announced()
        candidates = sorted(self.alive | set(beats))
        pipe = self.redis.pipeline(transaction=False)
        for instance in candidates:
            pipe.exists(self.keys.worker_alive(instance))
        alive = {instance for instance, exists in zip(candidates, pipe.execute(), strict=True)
                 if exists}
        now = time.monotonic()
        self.gone = {instance: self.gone.get(instance, now) for instance, beat in beats.items()
                     if self._gone_here(beat)}
        recently_gone = {instance for instance, since in self.gone.items()
                         if now - since <= GONE_REPORTED_S}
        dead = (self.alive - alive) | recently_gone
        self.alive = alive - set(self.gone)
        return dead - {self.own_instance}

    def _announced(self) -> dict[str, dict[str, Any]]:
        """Worker instances named by heartbeats in the process hash, with their beat."""
        found = {}
        for raw in self.redis.hvals(self.keys.processes):
            beat = json.loads(raw)
            if beat.get("kind") == "worker" and beat.get("instance"):
                found[str(beat["instance"])] = beat
        return found

    def _gone_here(self, beat: dict[str, Any]) -> bool:
        """The beat's process ran on this node and its pid is gone."""
        return (self.node is not None and beat.get("node") == self.node
                and isinstance(beat.get("pid"), int) and process_gone(beat["pid"]))


#: One claim: stream, group, the dead consumer, the consumer taking over.
Claim = tuple[str, str, str, str]
#: What a claim took: (entry id, fields) pairs, and whether more may be left.
Taken = tuple[list[tuple[str, dict[str, str]]], bool]


def take_pending(redis: RedisClient, claims: list[Claim], count: int) -> list[Taken]:
    """Claim up to `count` of each dead consumer's pending entries (idle for `MIN_IDLE_MS`
    or more) for the consumer taking over; two pipelined round trips for all claims."""
    pipe = redis.pipeline(transaction=False)
    for stream, group, dead, _ in claims:
        pipe.xpending_range(stream, group, "-", "+", count, consumername=dead,
                            idle=MIN_IDLE_MS)
    pending = [rows if isinstance(rows, list) else []
               for rows in pipe.execute(raise_on_error=False)]
    pipe = redis.pipeline(transaction=False)
    for (stream, group, _, heir), rows in zip(claims, pending, strict=True):
        if rows:
            pipe.xclaim(stream, group, heir, MIN_IDLE_MS, [row["message_id"] for row in rows])
    replies = iter(pipe.execute(raise_on_error=False) if len(pipe) else [])
    taken: list[Taken] = []
    for rows in pending:
        reply = next(replies) if rows else []
        entries = [(entry_id, fields) for entry_id, fields in reply if fields is not None] \
            if isinstance(reply, list) else []
        taken.append((entries, len(rows) >= count))
    return taken
