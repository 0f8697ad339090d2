"""Database URLs as the installed drivers take them."""

from __future__ import annotations

#: URL schemes that name PostgreSQL without a driver (Heroku spells it `postgres://`).
_BARE_POSTGRESQL = ("postgres://", "postgresql://")


def with_installed_driver(url: str) -> str:
    """Pin a PostgreSQL URL without a driver to psycopg2, the driver the service installs
    (SQLAlchemy 2.1's own default for `postgresql://` is psycopg 3, which it does not)."""
    for scheme in _BARE_POSTGRESQL:
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url
