"""Database and server URLs: as the installed drivers take them, and as they may be shown.
(SQLAlchemy is imported where it is needed: the settings use this module, and reading them
should not cost every command SQLAlchemy's import.)"""

from __future__ import annotations

#: URL schemes that name PostgreSQL without a driver (Heroku spells it `postgres://`).
_BARE_POSTGRESQL = ("postgres://", "postgresql://")


def is_postgresql(url: str) -> bool:
    """Whether `url` names PostgreSQL (any driver, `postgres://` included)."""
    return url.strip().split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def with_installed_driver(url: str) -> str:
    """Pin a PostgreSQL URL without a driver to psycopg2, the driver the service installs
    (SQLAlchemy 2.1's own default for `postgresql://` is psycopg 3, which it does not)."""
    for scheme in _BARE_POSTGRESQL:
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq (`psycopg2.connect`) takes it."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def without_password(url: str) -> str:
    """A URL as it may be printed or logged."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
