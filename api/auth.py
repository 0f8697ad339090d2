"""Bearer authentication: tenant API keys (hashed at rest) and the operator token.

Views declare who may call them with `@tenant_access(...)` or `@operator_access`; the caller's
identity is then `principal()`, which the view hands to the service layer. The operator token
is not a tenant key (401 on tenant endpoints) and a tenant key is not the operator token (403
on operator endpoints).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy import select

from api.context import scope
from api.dependencies import Principal, Scope
from models import ApiKey, Tenant
from models.tenancy import hash_key
from mq.errors import Forbidden, MQError, Unauthorized
from publishing.jobs import StaleEpoch

ROLES = ("admin", "producer", "consumer")
#: Who may publish, and who may subscribe and read deliveries.
PRODUCERS = ("admin", "producer")
CONSUMERS = ("admin", "consumer")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def principal() -> Principal:
    return g.principal


def _bearer_token() -> str:
    return bearer_token(request.headers.get("Authorization", ""))


def bearer_token(header: str) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing or malformed Authorization header (expected 'Bearer <key>')")
    return token.strip()


def _load_principal(here: Scope, token: str) -> Principal | None:
    return principal_by_hash(here, hash_key(token))


def principal_by_hash(here: Scope, key_hash: str) -> Principal | None:
    """The holder of the API key with this hash (the dashboard's session keeps the hash)."""
    return here.services.cache.get_or_load("key", key_hash, here.cache_epoch(),
                                           lambda: _principal_from_db(here, key_hash))


def _principal_from_db(here: Scope, key_hash: str) -> Principal | None:
    row = here.session.execute(
        select(ApiKey.tenant_id, Tenant.name, ApiKey.id, ApiKey.name, ApiKey.role)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash)
    ).first()
    return Principal(*row) if row else None


def _is_operator(here: Scope, token: str) -> bool:
    expected = here.services.settings.mq_operator_token
    if not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def is_operator_hash(here: Scope, token_hash: str) -> bool:
    """Whether `token_hash` is the hash of the current operator token (a session made with
    an old token ends when the token is changed)."""
    expected = here.services.settings.mq_operator_token
    return bool(expected) and hmac.compare_digest(token_hash, hash_key(expected or ""))


def tenant_access(*roles: str, publishes: bool = False) -> Callable[[F], F]:
    """Require a tenant API key whose role is one of `roles` (default: any role).

    `publishes`: the view publishes through the group writer, which checks the cache epoch
    for it; its look-ups trust the epoch this process read last, and it runs again with the
    writer's epoch if that was stale (see `api.cache`)."""
    allowed = roles or ROLES

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not publishes:
                return _as_caller(_bearer_token(), allowed, lambda: view(*args, **kwargs))
            return publish_as_caller(_bearer_token(), allowed, lambda: view(*args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return decorate


def publish_as_caller(token: str, allowed: tuple[str, ...], publish: Callable[[], T]) -> T:
    """Run `publish` as the holder of `token`, whose role must be one of `allowed`.

    Its look-ups trust the cache epoch this process read last; the group writer checks it.
    If it was stale (`StaleEpoch`), or a check refused under it while it is no longer
    current, `publish` runs again under the current epoch (see `api.cache`)."""
    here = scope()
    here.epoch_checked_later = True
    try:
        return _as_caller(token, allowed, publish)
    except StaleEpoch as stale:
        current = stale.epoch
    except MQError:  # refused under a trusted epoch: refuse only if it is current
        trusted, current = here.read_epoch(), here.services.cache.current_epoch()
        if current == trusted:
            raise
    here.use_epoch(current)
    here.services.cache.note_epoch(current)
    return _as_caller(token, allowed, publish)


def _as_caller(token: str, allowed: tuple[str, ...], call: Callable[[], T]) -> T:
    authorize(_load_principal(scope(), token), allowed)
    return call()


def authorize(found: Principal | None, allowed: tuple[str, ...]) -> Principal:
    """`found` as the request's caller, if its role is one of `allowed`."""
    if found is None:
        raise Unauthorized("unknown API key")
    if found.role not in allowed:
        raise Forbidden(f"the '{found.role}' role may not make this call")
    g.principal = found
    return found


def operator_access(view: F) -> F:
    """Require the operator token; a valid tenant key answers 403."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token, here = _bearer_token(), scope()
        if _is_operator(here, token):
            return view(*args, **kwargs)
        if _load_principal(here, token) is not None:
            raise Forbidden("this call needs the operator token")
        raise Unauthorized("unknown token")

    return wrapper  # type: ignore[return-value]
