"""Handler types by `handler_config.type`: each registers, in one place, the factory a worker
builds its handler with and the validator the API checks its `handler_config` with.

Adding a handler type is one more `HandlerType` in `HANDLER_TYPES`. Secrets are write-only:
`public_view` replaces them with `<name>_set`, and `updated_secrets` keeps them across updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate
from marshmallow import ValidationError as InvalidFields

from handlers.base import Handler, PermanentFailure
from handlers.configs import (
    DatabaseConfig,
    FunctionConfig,
    HttpConfig,
    validate_database,
    validate_function,
    validate_http,
)
from handlers.database import DatabaseHandler
from handlers.function import FunctionHandler
from handlers.http import HttpHandler
from handlers.signing import HIDDEN, generate_secret, rotated
from mq.settings import Settings
from mq.tracing import Tracing

#: Checks a raw `handler_config` and returns the object to store; raises `InvalidFields`.
ConfigValidator = Callable[[dict[str, Any], Settings], dict[str, Any]]


@dataclass(frozen=True)
class HandlerType:
    """One kind of delivery handler: how a worker builds it, how its config is checked (the
    validator, after the config's shape: `config_schema`, which the API's document shows),
    and which of the config's fields are secrets (stored, never shown)."""

    name: str
    factory: Callable[[Settings, Tracing], Handler]
    validate_config: ConfigValidator
    config_schema: type[Schema]
    write_only: tuple[str, ...] = ()


HANDLER_TYPES: dict[str, HandlerType] = {
    handler_type.name: handler_type for handler_type in (
        HandlerType("http", lambda settings, tracing: HttpHandler(settings, tracing=tracing),
                    validate_http, HttpConfig, write_only=("secret",)),
        HandlerType("function", lambda settings, _: FunctionHandler(settings),
                    validate_function, FunctionConfig),
        HandlerType("database", lambda settings, _: DatabaseHandler(settings),
                    validate_database, DatabaseConfig),
    )
}
WRITE_ONLY = tuple(sorted({name for t in HANDLER_TYPES.values() for name in t.write_only}))


# --- the API's side: configs ------------------------------------------------------------------


class _TypeOnly(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Length(1, 50))


def validate_handler_config(raw: Any, settings: Settings) -> dict[str, Any]:
    """The config to store; raises `InvalidFields` with messages keyed inside the object."""
    if not isinstance(raw, dict):
        raise InvalidFields(["must be an object"])
    handler_type = HANDLER_TYPES.get(_TypeOnly().load(raw)["type"])
    if handler_type is None:
        known = ", ".join(sorted(HANDLER_TYPES))
        raise InvalidFields({"type": [f"unknown handler type (known: {known})"]})
    return handler_type.validate_config(raw, settings)


def updated_secrets(raw: dict[str, Any], new: dict[str, Any], old: dict[str, Any], *,
                    now: float, overlap_s: int) -> tuple[dict[str, Any], str | None]:
    """On update, the config to store (`raw` as sent, `new` as validated, `old` as stored)
    and the secret generated if one was asked for.

    A config that does not mention a secret keeps the stored one: responses never show it,
    so a client that PUTs back what it read must not erase it; `"secret": null` removes it.
    A changed secret keeps signing beside the old one for `overlap_s` seconds."""
    if new.get("type") != old.get("type"):
        return generate_secret(new)
    kept = dict(new)
    for name in WRITE_ONLY:
        if name in old and name not in raw:
            kept[name] = old[name]
    kept, generated = generate_secret(kept)
    return rotated(kept, old, now, overlap_s), generated


def public_view(config: dict[str, Any]) -> dict[str, Any]:
    """The config as answered: write-only fields replaced by `<name>_set`, rotation state
    left out."""
    view = {name: value for name, value in config.items()
            if name not in WRITE_ONLY and name not in HIDDEN}
    handler_type = HANDLER_TYPES.get(str(config.get("type")))
    for name in handler_type.write_only if handler_type is not None else ():
        view[f"{name}_set"] = bool(config.get(name))
    return view


# --- the workers' side: handlers --------------------------------------------------------------


class HandlerRegistry:
    """A worker process's handlers: one instance per handler type, built on first use."""

    def __init__(self, settings: Settings, tracing: Tracing | None = None) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing()
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def get(self, handler_type: str) -> Handler:
        handler = self._handlers.get(handler_type)
        if handler is not None:
            return handler
        registered = HANDLER_TYPES.get(handler_type)
        if registered is None:
            raise PermanentFailure(f"no handler of type '{handler_type}' in this worker")
        with self._lock:
            if handler_type not in self._handlers:
                self._handlers[handler_type] = registered.factory(self.settings, self.tracing)
            return self._handlers[handler_type]

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
