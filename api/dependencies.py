"""What the API process holds for its lifetime, and what one request holds.

`Principal` is the caller (`api.auth` finds it). `Services` (settings, database, Redis,
streams, cache, group writer, tracing) is built once by the app factory. `Scope` is one
request's share of it: a database session opened on first use, the cache epoch read once, the
publish timer, the request's trace context.
The service layer (`api.services`) is handed these (or the parts it needs) by the resources; it
never looks them up itself, and nothing here knows Flask (`api.context` keeps them per app and
per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session

from api.cache import EpochCache
from broker.connection import RedisClient
from broker.delays import DelaySet
from broker.keys import Keys
from broker.streams import TopicStreams
from models import Database
from mq.settings import Settings
from mq.tracing import TraceContext, Tracing
from publishing.writer import GroupWriter


@dataclass(frozen=True)
class Principal:
    """Who makes the request: a tenant's API key and its role."""

    tenant_id: str
    tenant_name: str
    key_id: str
    key_name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Services:
    """The process's connections and shared objects."""

    settings: Settings
    database: Database
    redis: RedisClient
    keys: Keys
    streams: TopicStreams
    cache: EpochCache
    writer: GroupWriter
    tracing: Tracing = field(default_factory=Tracing)

    @cached_property
    def delays(self) -> DelaySet:
        """The process's delay set (its scripts registered once)."""
        return DelaySet(self.redis, self.keys, stream_cap=self.settings.stream_max_len)


class Scope:
    """One request's dependencies: the process's `services` plus a lazily opened database
    session and the cache epoch its look-ups trust (see `api.cache`)."""

    def __init__(self, services: Services, started: float | None = None,
                 trace: TraceContext | None = None) -> None:
        self.services = services
        #: The request's W3C trace context (`traceparent` / `tracestate`), if valid.
        self.trace = trace
        #: When the request started (perf_counter), for the publish latency metric.
        self.started = started
        #: A publish: its look-ups trust the epoch this process read last, and the group
        #: writer checks that epoch for it.
        self.epoch_checked_later = False
        #: The request's messages were counted against the tenant's publish rate (a publish
        #: run again under a newer epoch must not count them twice).
        self.publish_rate_taken = False
        self._session: Session | None = None
        self._epoch: str | None = None
        self._epoch_read = False

    @property
    def session(self) -> Session:
        """The request's session, opened on first use and closed at teardown."""
        if self._session is None:
            self._session = self.services.database.session()
        return self._session

    def cache_epoch(self) -> str | None:
        """The cache epoch of this request: read from Redis once, or, for a publish, the one
        this process read last."""
        if not self._epoch_read:
            cache = self.services.cache
            trusted = cache.last_epoch if self.epoch_checked_later else None
            self._epoch = trusted if trusted is not None else cache.current_epoch()
            self._epoch_read = True
        return self._epoch

    def read_epoch(self) -> str | None:
        """The epoch this request's look-ups used, None if they used none yet."""
        return self._epoch

    def use_epoch(self, epoch: str | None) -> None:
        """Run the request's next look-ups under `epoch`, checked now (a publish's retry)."""
        self.epoch_checked_later = False
        self._epoch, self._epoch_read = epoch, True

    def epoch_to_check(self) -> str | None:
        """The epoch the group writer must check for this publish, None if it was current."""
        return self.read_epoch() if self.epoch_checked_later else None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
