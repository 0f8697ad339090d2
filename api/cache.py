"""A process-local cache of hot look-ups (API keys, topics), invalidated across processes.

Every API process keeps its own small cache; a write that changes what is cached (a key
revoked, a topic updated or deleted) increments one Redis counter, the epoch, after it
commits. Each request reads the epoch once, and an entry is only used if it was loaded under
the same epoch — so a revoked key is refused by every process on the very next request,
while unchanged keys and topics cost one Redis GET instead of database round trips.
Entries are tagged with the epoch read *before* their database load, so a write racing with a
load can only make the entry look older than it is, never fresher.

Publishes do not pay that GET each: they go ahead under the epoch this process read last,
and their group writer reads the epoch once for the whole group, before it writes anything
(`publishing.group`). A publish that went ahead under an old epoch is written by nobody and
answered `StaleEpoch`; `tenant_access` then runs it again, its look-ups made under the epoch
the writer read. So a revoked key or a changed topic is still refused from the very next
request on, at one Redis read per group instead of one per request. When Redis cannot be read
the cache is bypassed; entries also expire after `ttl_s` as a last resort.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from broker.connection import RedisClient

T = TypeVar("T")


class EpochCache:
    def __init__(self, redis: RedisClient, epoch_key: str, *, ttl_s: float = 60,
                 max_entries: int = 10_000) -> None:
        self.redis = redis
        self.epoch_key = epoch_key
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[str, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        #: The epoch this process read last: what a publish trusts until its group checks it.
        self.last_epoch: str | None = None

    def current_epoch(self) -> str | None:
        """The epoch now, or None when Redis cannot be read (then nothing is cached)."""
        try:
            stored = self.redis.get(self.epoch_key)
        except RedisError:
            return None
        epoch = _text(stored) or "0"
        self.last_epoch = epoch
        return epoch

    def note_epoch(self, epoch: str | None) -> None:
        """An epoch read elsewhere (the group writer's check of a publish)."""
        if epoch is not None:
            self.last_epoch = epoch

    def get_or_load(self, kind: str, key: str, epoch: str | None, load: Callable[[], T]) -> T:
        """The cached value for (kind, key) under `epoch`, else `load()` (cached unless
        None)."""
        if epoch is None:
            return load()
        with self._lock:
            entry = self._entries.get((kind, key))
        if entry and entry[0] == epoch and entry[1] > time.monotonic():
            return entry[2]
        value = load()
        if value is not None:
            self._store((kind, key), (epoch, time.monotonic() + self.ttl_s, value))
        return value

    def invalidate(self) -> None:
        """Make every process drop its entries; call after the change is committed."""
        self.redis.incr(self.epoch_key)

    def _store(self, key: tuple[str, str], entry: tuple[str, float, Any]) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _text(value: str | bytes | None) -> str | None:
    """A Redis reply as text (clients made by `broker.connection` already decode)."""
    return value.decode() if isinstance(value, bytes) else value
