"""Handler types by `handler_config.type`: each registers, in one place, the factory a worker
builds its handler with and the validator the API checks its `handler_config` with.

Adding a handler type is one more `HandlerType` in `HANDLER_TYPES`. Secrets are write-only:
`public_view` replaces them with `<name>_set`, and `keep_secrets` keeps them across updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate
from marshmallow import ValidationError as InvalidFields

from handlers.base import Handler, PermanentFailure
from handlers.configs import validate_database, validate_function, validate_http
from handlers.database import DatabaseHandler
from handlers.function import FunctionHandler
from handlers.http import HttpHandler
from mq.settings import Settings

#: Checks a raw `handler_config` and returns the object to store; raises `InvalidFields`.
ConfigValidator = Callable[[dict[str, Any], Settings], dict[str, Any]]


@dataclass(frozen=True)
class HandlerType:
    """One kind of delivery handler: how a worker builds it, how its config is checked, and
    which of the config's fields are secrets (stored, never shown)."""

    name: str
    factory: Callable[[Settings], Handler]
    validate_config: ConfigValidator
    write_only: tuple[str, ...] = ()


HANDLER_TYPES: dict[str, HandlerType] = {
    handler_type.name: handler_type for handler_type in (
        HandlerType("http", HttpHandler, validate_http, write_only=("secret",)),
        HandlerType("function", FunctionHandler, validate_function),
        HandlerType("database", DatabaseHandler, validate_database),
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


def keep_secrets(
    raw: dict[str, Any], new: dict[str, Any], old: dict[str, Any]
) -> dict[str, Any]:
    """On update, a config (`raw` as sent, `new` as validated) that does not mention a secret
    keeps the stored one: responses never show it, so a client that PUTs back what it read
    must not erase it. `"secret": null` removes it."""
    if new.get("type") != old.get("type"):
        return new
    kept = dict(new)
    for name in WRITE_ONLY:
        if name in old and name not in raw:
            kept[name] = old[name]
    return kept


def public_view(config: dict[str, Any]) -> dict[str, Any]:
    """The config as answered: write-only fields replaced by `<name>_set`."""
    view = {name: value for name, value in config.items() if name not in WRITE_ONLY}
    handler_type = HANDLER_TYPES.get(str(config.get("type")))
    for name in handler_type.write_only if handler_type is not None else ():
        view[f"{name}_set"] = bool(config.get(name))
    return view


# --- the workers' side: handlers --------------------------------------------------------------


class HandlerRegistry:
    """A worker process's handlers: one instance per handler type, built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
            return self._handlers.setdefault(handler_type, registered.factory(self.settings))

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
