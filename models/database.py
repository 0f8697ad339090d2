"""Engine, session factory and migrations for the metadata database (PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.partitions import ensure_partitions
from mq.urls import with_installed_driver

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A pooled, pre-pinged engine."""
    return create_engine(
        with_installed_driver(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


class Database:
    """The engine and session factory one process uses."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    # Imported here: Alembic takes a sixth of a second to import, and every worker,
    # scheduler and API process imports this module without migrating anything.
    from alembic.config import Config

    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", with_installed_driver(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to `revision`; at the head, also create the record
    tables' partitions of the coming days (a database migrated days ago needs them too)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        engine = make_engine(url, pool_size=1)
        try:
            with engine.begin() as connection:
                ensure_partitions(connection, utcnow())
        finally:
            engine.dispose()


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database `<prefix>_<random>` on the server of `admin_url`, for
    a test run or a benchmark; yields its URL and drops it (connections and all) afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
