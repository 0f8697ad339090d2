"""The servers a test run talks to.

Each of PostgreSQL and Redis is, in this order: the one named by `MQ_TEST_DATABASE_URL` /
`MQ_TEST_REDIS_URL`; the one answering on its default address; or, where nothing answers, an
embedded server (`mq.embedded`) started for the run and stopped after it. So the suite needs
nothing but Python, and uses real servers wherever there are some.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from redis import Redis
from sqlalchemy.engine import make_url

from mq.embedded import UNDURABLE, embedded_postgres, embedded_valkey

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class RunServers:
    """The URLs of the run's servers, what they are, and what stops the embedded ones."""

    database_url: str = ""
    redis_url: str = ""
    described: list[str] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _directory: Path | None = None

    @classmethod
    def start(cls, environ: Mapping[str, str]) -> RunServers:
        servers = cls()
        try:
            servers.database_url = servers._database(environ.get("MQ_TEST_DATABASE_URL"))
            servers.redis_url = servers._redis(environ.get("MQ_TEST_REDIS_URL"))
        except BaseException:
            servers.stop()
            raise
        return servers

    def _database(self, given: str | None) -> str:
        if given:
            self.described.append(f"PostgreSQL {_shown(given)} (MQ_TEST_DATABASE_URL)")
            return given
        if _postgres_answers(DEFAULT_DATABASE_URL):
            self.described.append(f"PostgreSQL {DEFAULT_DATABASE_URL} (answering)")
            return DEFAULT_DATABASE_URL
        started = time.monotonic()
        url = self._stack.enter_context(embedded_postgres(
            self._scratch() / "postgres", keep=False, settings=UNDURABLE))
        self.described.append(f"embedded PostgreSQL {_server_version(url)} "
                              f"(started in {time.monotonic() - started:.1f} s)")
        return url

    def _redis(self, given: str | None) -> str:
        if given:
            self.described.append(f"Redis {_shown(given)} (MQ_TEST_REDIS_URL)")
            return given
        if _redis_answers(DEFAULT_REDIS_URL):
            self.described.append(f"Redis {DEFAULT_REDIS_URL} (answering)")
            return DEFAULT_REDIS_URL
        started = time.monotonic()
        url = self._stack.enter_context(embedded_valkey(self._scratch() / "valkey"))
        self.described.append(f"embedded Valkey {url} "
                              f"(started in {time.monotonic() - started:.1f} s)")
        return url

    def _scratch(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="mq-test-"))
        return self._directory

    def stop(self) -> None:
        self._stack.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _postgres_answers(url: str) -> bool:
    try:
        psycopg2.connect(_libpq(url), connect_timeout=2).close()
    except psycopg2.Error:
        return False
    return True


def _redis_answers(url: str) -> bool:
    try:
        with Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            return bool(client.ping())
    except Exception:
        return False


def _server_version(url: str) -> str:
    connection = psycopg2.connect(_libpq(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return str(cursor.fetchone()[0])  # type: ignore[index]
    finally:
        connection.close()
