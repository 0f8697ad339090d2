"""The steps around every handler: filter, schema check, transform.

The worker calls `apply(handler_config, message_filter, delivery)` before the handler:

1. `message_filter` (see `handlers.filters`): a message that does not match yields `FILTERED`,
   and the handler is not called (the worker acknowledges it and counts it as filtered);
2. `handler_config.schema`: a payload that does not match raises `PermanentFailure` with
   reason `schema` (dead-lettered at once, never retried);
3. `handler_config.transform`: the JMESPath result over `{payload, headers, key}` becomes the
   payload of the returned `Delivery`; a runtime error of the expression is permanent too.

Policies, schemas and expressions were checked when the subscription was saved; they are
compiled once per process and cached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from formats.json_schema import payload_problem, schema_validator
from handlers.base import Delivery, PermanentFailure
from handlers.filters import FilterPolicyError, Policy, compile_policy
from handlers.paths import message_document
from handlers.transform import transform


@dataclass(frozen=True)
class Filtered:
    """The message did not match the subscription's filter: acknowledge, count, skip."""


FILTERED = Filtered()


def apply(config: dict[str, Any], message_filter: dict[str, Any] | None,
          delivery: Delivery) -> Delivery | Filtered:
    """The delivery to hand to the handler (payload possibly transformed), or `FILTERED`."""
    if message_filter and not _policy(message_filter).matches(message_document(delivery)):
        return FILTERED
    schema = config.get("schema")
    if schema is not None:
        _check_schema(schema, delivery)
    expression = config.get("transform")
    if expression:
        return dataclasses.replace(delivery, payload=_transformed(expression, delivery))
    return delivery


class IdentityCache:
    """Values built from config objects, found again by identity without re-reading them.

    Workers hand the same (never mutated) config dicts to every delivery of a subscription;
    hashing their content per message would cost more than the step itself. Entries hold
    their object, so an id is never reused while cached; the cache empties when full.
    """

    def __init__(self, build: Callable[[Any], Any], size: int = 1024) -> None:
        self.build = build
        self.size = size
        self._items: dict[int, tuple[Any, Any]] = {}

    def get(self, obj: Any) -> Any:
        entry = self._items.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = self.build(obj)
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[id(obj)] = (obj, value)
        return value


def _compile_policy(message_filter: dict[str, Any]) -> Policy:
    try:
        return compile_policy(message_filter)
    except FilterPolicyError as exc:  # saved before validation existed: refuse, do not crash
        raise PermanentFailure(f"invalid message_filter: {exc.problems}") from None


_POLICIES = IdentityCache(_compile_policy)
_SCHEMAS = IdentityCache(schema_validator)


def _policy(message_filter: dict[str, Any]) -> Policy:
    return _POLICIES.get(message_filter)


def _check_schema(schema: Any, delivery: Delivery) -> None:
    try:
        problem = payload_problem(_SCHEMAS.get(schema), delivery.payload)
    except Exception as exc:  # an unusable schema cannot be fixed by retrying
        raise PermanentFailure(f"the schema cannot be applied: {type(exc).__name__}: {exc}",
                               reason="schema") from None
    if problem is not None:
        raise PermanentFailure(f"payload does not match the schema: {problem}", reason="schema")


def _transformed(expression: str, delivery: Delivery) -> Any:
    try:
        return transform(expression, message_document(delivery))
    except Exception as exc:
        raise PermanentFailure(
            f"transform failed: {type(exc).__name__}: {str(exc)[:300]}") from None
