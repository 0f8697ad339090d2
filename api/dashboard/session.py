"""Who is signed in to the dashboard, and what they may do.

The session cookie holds the hash of the API key (or of the operator token) that signed in,
never the key itself: each request looks the key up again (`api.auth.principal_by_hash`,
cached like a bearer key), so a revoked key or a changed operator token ends its sessions at
once. Role checks are the REST API's own (`api.auth.authorize` with its role sets).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, session
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError as CSRFError

from api.auth import ROLES, authorize, is_operator_hash, principal_by_hash
from api.context import scope
from api.dependencies import Principal
from models.tenancy import hash_key
from mq.errors import FeatureOff, Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Viewer:
    """The signed-in tenant key (with its role) or the operator."""

    principal: Principal | None

    @property
    def is_operator(self) -> bool:
        return self.principal is None

    def may(self, roles: tuple[str, ...]) -> bool:
        return self.principal is not None and self.principal.role in roles


def require_secret_key() -> None:
    if not current_app.config.get("SECRET_KEY"):
        raise FeatureOff("the dashboard is off: set MQ_SECRET_KEY to turn it on")


def sign_in(token: str) -> Viewer:
    """Start a session for an API key or the operator token (`Unauthorized` for neither)."""
    token = token.strip()
    here = scope()
    token_hash = hash_key(token)
    if token and is_operator_hash(here, token_hash):
        _start({"kind": "operator", "hash": token_hash})
        return Viewer(None)
    found = principal_by_hash(here, token_hash) if token else None
    if found is None:
        raise Unauthorized("unknown API key or operator token")
    _start({"kind": "tenant", "hash": token_hash})
    return Viewer(found)


def _start(identity: dict[str, str]) -> None:
    session.clear()  # a new session for every sign-in: nothing carries over (fixation)
    session.permanent = True
    session.update(identity, since=int(time.time()))


def sign_out() -> None:
    session.clear()


def current_viewer() -> Viewer:
    """The signed-in viewer; `Unauthorized` when there is none or it no longer holds."""
    require_secret_key()
    kind, token_hash = session.get("kind"), session.get("hash")
    if not isinstance(token_hash, str):
        raise Unauthorized("sign in")
    here = scope()
    if kind == "operator" and is_operator_hash(here, token_hash):
        return Viewer(None)
    if kind == "tenant":
        found = principal_by_hash(here, token_hash)
        if found is not None:
            return Viewer(found)
    session.clear()
    raise Unauthorized("the session has ended: sign in again")


def dashboard_access(*roles: str, operator: bool = False) -> Callable[[F], F]:
    """Let a page or action be used by tenant keys of `roles` (default: any role) and, with
    `operator`, by the operator too. The view gets the `Viewer` as its first argument."""
    allowed = roles or ROLES

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            viewer = current_viewer()
            if viewer.is_operator:
                if not operator:
                    raise Forbidden("this page is for tenant API keys, not the operator")
            else:
                authorize(viewer.principal, allowed)
            return view(viewer, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def tenant_of(viewer: Viewer) -> Principal:
    """The viewer's tenant key (pages behind `dashboard_access` without `operator`)."""
    if viewer.principal is None:
        raise Forbidden("this page is for tenant API keys, not the operator")
    return viewer.principal


def csrf_token() -> str:
    return generate_csrf()


def check_csrf(form_token: str | None) -> None:
    """Refuse a form post without this session's CSRF token."""
    try:
        validate_csrf(form_token)
    except CSRFError as exc:
        raise Forbidden(f"the form's CSRF token is missing or wrong ({exc}); "
                          "reload the page and try again") from None
