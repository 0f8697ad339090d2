"""Recent rates and latencies, kept in Redis for the metrics API.

Rates: one hash per topic or subscription (`Keys.rate_window`) holds a ring of per-second
slots, field `<second % RING_S>` = `"<second>,<a>,<b>"` (topics: published count and bytes;
subscriptions: succeeded and failed attempts). A slot is reset when a later second reuses it,
so the hash never holds more than `RING_S` fields, and summing the slots of the last
`WINDOW_S` seconds gives the recent rate. A second hash (`Keys.rate_minutes`) keeps the same
counts per minute for `MINUTE_RING` minutes: the dashboard's sparklines. Latencies: a capped
list per subscription (`Keys.latencies`) of `"<finished ms>:<latency ms>"` samples, newest first.

Writers batch: the API adds one slot bump per publish request, workers flush their tallies
about once a second (see `workers/metrics.py`), never one round trip per delivery.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis.client import Pipeline

from broker.connection import RedisClient
from broker.keys import Keys
from broker.scripts import LuaScript

#: Rates are per second over this many recent seconds (docs/api.md).
WINDOW_S = 60
#: Slots in the ring: more than the window, so a slot being rewritten is never read.
RING_S = 120
#: Per-minute slots: more than the `HISTORY_MIN` minutes a history shows.
MINUTE_RING = 20
HISTORY_MIN = 15
#: Latency samples kept per subscription, and how old a sample may be to count.
LATENCY_SAMPLES = 1000
LATENCY_WINDOW_S = 300
#: Keys of topics and subscriptions that stop moving vanish after this long.
IDLE_EXPIRY_S = 3600


@dataclass(frozen=True)
class Window:
    """Totals of the two counters of one rate hash over the window."""

    a: int = 0
    b: int = 0

    @property
    def a_rate(self) -> float:
        return round(self.a / WINDOW_S, 3)

    @property
    def b_rate(self) -> float:
        return round(self.b / WINDOW_S, 3)


@dataclass
class Tally:
    """What one worker saw of one subscription since its last flush."""

    per_second: dict[int, list[int]] = field(default_factory=dict)  # second -> [ok, failed]
    latencies: list[str] = field(default_factory=list)

    def add(self, second: int, *, ok: int = 0, failed: int = 0) -> None:
        counts = self.per_second.setdefault(second, [0, 0])
        counts[0] += ok
        counts[1] += failed


class Rates:
    """Reads and writes the rate rings and latency lists."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._bump = LuaScript(redis, "broker", "rate_bump")

    def record_published(self, topic_id: str, count: int, size: int,
                         now: float | None = None) -> None:
        second = int(now if now is not None else time.time())
        self._bump(keys=self._rings(topic_id), args=_bump_args(second, count, size))

    def queue_published(self, pipe: Pipeline, topic_id: str, count: int, size: int) -> None:
        """`record_published` queued on a pipeline."""
        self._bump.queue(pipe, self._rings(topic_id), _bump_args(int(time.time()), count, size))

    def _rings(self, owner_id: str) -> list[str]:
        return [self.keys.rate_window(owner_id), self.keys.rate_minutes(owner_id)]

    def record_deliveries(self, tallies: dict[str, Tally]) -> None:
        """Flush the tallies of several subscriptions in one pipelined round trip."""
        if not tallies:
            return
        pipe = self.redis.pipeline(transaction=False)
        for subscription_id, tally in tallies.items():
            rings = self._rings(subscription_id)
            for second, (ok, failed) in tally.per_second.items():
                self._bump.queue(pipe, rings, _bump_args(second, ok, failed))
            if tally.latencies:
                samples = self.keys.latencies(subscription_id)
                pipe.lpush(samples, *tally.latencies)
                pipe.ltrim(samples, 0, LATENCY_SAMPLES - 1)
                pipe.expire(samples, IDLE_EXPIRY_S)
        pipe.execute()

    def windows(self, ids: Sequence[str], now: float | None = None) -> dict[str, Window]:
        """The last `WINDOW_S` seconds of each id's ring (the current second included)."""
        if not ids:
            return {}
        now_s = int(now if now is not None else time.time())
        pipe = self.redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hvals(self.keys.rate_window(rid))
        return {rid: _window(values, now_s) for rid, values in zip(ids, pipe.execute(),
                                                                    strict=True)}

    def history(self, ids: Sequence[str], now: float | None = None
                ) -> dict[str, list[tuple[int, int]]]:
        """Each id's counts per minute over the last `HISTORY_MIN` minutes, oldest first
        (the current, unfinished minute last)."""
        if not ids:
            return {}
        minute = int(now if now is not None else time.time()) // 60
        pipe = self.redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hvals(self.keys.rate_minutes(rid))
        out: dict[str, list[tuple[int, int]]] = {}
        for rid, values in zip(ids, pipe.execute(), strict=True):
            counts: dict[int, tuple[int, int]] = {}
            for value in values:
                at, a, b = value.split(",")
                counts[int(at)] = (int(a), int(b))
            out[rid] = [counts.get(m, (0, 0)) for m in range(minute - HISTORY_MIN + 1, minute + 1)]
        return out

    def latencies(self, subscription_ids: Sequence[str], now: float | None = None
                  ) -> dict[str, list[float]]:
        """Recent latency samples (ms) of each subscription."""
        if not subscription_ids:
            return {}
        oldest_ms = ((now if now is not None else time.time()) - LATENCY_WINDOW_S) * 1000
        pipe = self.redis.pipeline(transaction=False)
        for sid in subscription_ids:
            pipe.lrange(self.keys.latencies(sid), 0, -1)
        out: dict[str, list[float]] = {}
        for sid, samples in zip(subscription_ids, pipe.execute(), strict=True):
            out[sid] = [float(lat) for at, _, lat in (s.partition(":") for s in samples)
                        if float(at) >= oldest_ms]
        return out


def _bump_args(second: int, a: int, b: int) -> list[int]:
    return [second, a, b, RING_S, IDLE_EXPIRY_S, MINUTE_RING]


def _window(values: Iterable[str], now_s: int) -> Window:
    a = b = 0
    for value in values:
        second, va, vb = value.split(",")
        if now_s - WINDOW_S < int(second) <= now_s:
            a += int(va)
            b += int(vb)
    return Window(a, b)


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (`None` without samples)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1], 3)


def average(samples: Sequence[float]) -> float | None:
    return round(sum(samples) / len(samples), 3) if samples else None
