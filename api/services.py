"""What the API process holds for its lifetime: settings, database, Redis, streams.

Built once by the app factory and kept in `app.extensions["mq"]`; a request reaches it with
`services()` and gets its own database session with `services().db_session()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy.orm import Session

from api.cache import EpochCache
from broker.connection import RedisClient
from broker.keys import Keys
from broker.streams import TopicStreams
from models import Database
from mq.settings import Settings
from publishing.writer import GroupWriter


@dataclass
class Services:
    settings: Settings
    database: Database
    redis: RedisClient
    keys: Keys
    streams: TopicStreams
    cache: EpochCache
    writer: GroupWriter

    def db_session(self) -> Session:
        """The current request's session, opened on first use and closed at teardown."""
        if "db_session" not in g:
            g.db_session = self.database.session()
        return g.db_session

    def cache_epoch(self) -> str | None:
        """The cache epoch of the current request: read from Redis once per request, or, for
        a publish (`g.epoch_checked_later`), the one this process read last (see
        `api.cache`)."""
        here = g._get_current_object()  # type: ignore[attr-defined]  # one proxy look-up
        epoch = here.get("cache_epoch", _UNREAD)
        if epoch is _UNREAD:
            trusted = self.cache.last_epoch if here.get("epoch_checked_later") else None
            epoch = here.cache_epoch = \
                trusted if trusted is not None else self.cache.current_epoch()
        return epoch


_UNREAD = object()


def services() -> Services:
    return current_app.extensions["mq"]


def close_request_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
