"""Dotted paths into a message, as filters and the database handler name its parts.

A message is seen as the document `{"payload": …, "headers": {…}, "key": …}`. A path is
`key`, `payload`, `payload.<field>.<field>…` or `headers.<name>`; a header name is taken
whole (header names may contain dots), payload fields are split on dots, and a segment that
is a non-negative integer also indexes into an array (`payload.items.0.sku`).
"""

from __future__ import annotations

from typing import Any, Final

from handlers.base import Delivery

MAX_PATH_LENGTH = 500
ROOTS = ("payload", "headers", "key")


class _Missing:
    """The value of a path that leads nowhere (distinct from a JSON `null`)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def path_problem(path: Any) -> str | None:
    """Why `path` is not a valid message path, or None if it is."""
    if not isinstance(path, str) or not path:
        return "a path must be a non-empty string"
    if len(path) > MAX_PATH_LENGTH:
        return f"a path is at most {MAX_PATH_LENGTH} characters"
    root, dot, rest = path.partition(".")
    if root not in ROOTS:
        return "a path starts with 'payload', 'headers.<name>' or 'key'"
    if root == "key" and dot:
        return "'key' has no fields"
    if root == "headers" and not rest:
        return "name a header: 'headers.<name>'"
    if root == "payload" and dot and not all(rest.split(".")):
        return "a path has no empty segments"
    return None


def message_document(delivery: Delivery) -> dict[str, Any]:
    """The document paths and transforms look into."""
    return {"payload": delivery.payload, "headers": dict(delivery.headers), "key": delivery.key}


def split(path: str) -> tuple[str, list[str]]:
    """The root and the segments under it (a header name is one segment)."""
    root, dot, rest = path.partition(".")
    if not dot:
        return root, []
    if root == "headers":
        return root, [rest]
    return root, rest.split(".")


def resolve(document: dict[str, Any], path: str) -> Any:
    """The value at `path`, or `MISSING`."""
    root, segments = split(path)
    if root not in document:
        return MISSING
    value = document[root]
    if root == "key" and value is None:
        return MISSING
    for segment in segments:
        value = step(value, segment)
        if value is MISSING:
            return MISSING
    return value


def step(value: Any, segment: str) -> Any:
    """One segment down from `value`: an object's field or an array's index."""
    if isinstance(value, dict):
        return value.get(segment, MISSING)
    if isinstance(value, list) and segment.isdigit() and segment.isascii():
        index = int(segment)
        return value[index] if index < len(value) else MISSING
    return MISSING
