"""Marshmallow fields and validators shared by the resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import fields, validate

# `(?!\n)$`: Python's `$` also matches before a trailing newline; `\Z` is not valid in OpenAPI.
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}(?!\n)$"
TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}(?!\n)$"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a `Z`: `2026-11-27T16:44:08.123Z`."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Timestamp(fields.DateTime):
    """A DateTime that dumps as `iso()` and loads ISO 8601 (a naive value is taken as UTC)."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return iso(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class StrictBoolean(fields.Boolean):
    """JSON `true` or `false` only: marshmallow's Boolean would also take "yes", "1" or 1."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def name_field(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(NAME_PATTERN, error="1-200 characters of A-Z a-z 0-9 . _ -"),
        **kwargs,
    )


def strict_int(low: int, high: int | None = None, **kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(low, high), **kwargs)
