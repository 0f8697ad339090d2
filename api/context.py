"""Where a request finds the process's `Services` and its own `Scope` (`api.dependencies`).

Only the edge uses this module: resources (the blueprints), authentication, the app factory
and the publish fast path. They hand what they found down to the service layer.
"""

from __future__ import annotations

from flask import current_app, g

from api.dependencies import Scope, Services


def services() -> Services:
    return current_app.extensions["mq"]


def scope() -> Scope:
    """The current request's scope, made on first use."""
    found: Scope | None = g.get("scope")
    if found is None:
        found = g.scope = Scope(services(), g.get("metrics_started"), g.get("trace"))
    return found


def close_request_scope(_exc: BaseException | None = None) -> None:
    found: Scope | None = g.pop("scope", None)
    if found is not None:
        found.close()
