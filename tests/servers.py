"""The servers a test run talks to.

Each of PostgreSQL and Redis is, in this order: the one named by `MQ_TEST_DATABASE_URL` /
`MQ_TEST_REDIS_URL`; the one answering on its default address; or, where nothing answers, an
embedded server (`cli.embedded`) started for the run and stopped after it. So the suite needs
nothing but Python, and uses real servers wherever there are some.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from redis import Redis

from cli.embedded import UNDURABLE, embedded_postgres, embedded_valkey
from mq.urls import libpq_url, without_password

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
            servers.database_url = servers._resolve(
                "PostgreSQL", environ.get("MQ_TEST_DATABASE_URL"), "MQ_TEST_DATABASE_URL",
                DEFAULT_DATABASE_URL, _postgres_answers, servers._embedded_postgres)
            servers.redis_url = servers._resolve(
                "Redis", environ.get("MQ_TEST_REDIS_URL"), "MQ_TEST_REDIS_URL",
                DEFAULT_REDIS_URL, _redis_answers, servers._embedded_valkey)
        except BaseException:
            servers.stop()
            raise
        return servers

    def _resolve(self, kind: str, given: str | None, variable: str, default: str,
                 answers: Callable[[str], bool], embedded: Callable[[], tuple[str, str]]
                 ) -> str:
        """The given server, else the one answering on `default`, else an embedded one."""
        if given:
            self.described.append(f"{kind} {without_password(given)} ({variable})")
            return given
        if answers(default):
            self.described.append(f"{kind} {default} (answering)")
            return default
        started = time.monotonic()
        url, name = embedded()
        self.described.append(f"embedded {name} (started in {time.monotonic() - started:.1f} s)")
        return url

    def _embedded_postgres(self) -> tuple[str, str]:
        url = self._stack.enter_context(embedded_postgres(
            self._scratch() / "postgres", keep=False, settings=UNDURABLE))
        return url, f"PostgreSQL {_server_version(url)}"

    def _embedded_valkey(self) -> tuple[str, str]:
        url = self._stack.enter_context(embedded_valkey(self._scratch() / "valkey"))
        return url, f"Valkey {url}"

    def _scratch(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="mq-test-"))
        return self._directory

    def stop(self) -> None:
        self._stack.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def _postgres_answers(url: str) -> bool:
    try:
        psycopg2.connect(libpq_url(url), connect_timeout=2).close()
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
    connection = psycopg2.connect(libpq_url(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return str(cursor.fetchone()[0])  # type: ignore[index]
    finally:
        connection.close()
