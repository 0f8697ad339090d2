"""Keyset pagination: `limit` + an opaque `cursor`, answered with `next_cursor`.

Every list answers `{"items": [...], "next_cursor": <opaque string or null>}` (docs/api.md
"Lists"): `page_of()` makes that response schema for an item schema, `PageArgs` reads the
query, `paginate` runs it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from mq.errors import ValidationError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def page_of(item: type[Schema], name: str | None = None) -> type[Schema]:
    """The list response schema for `item`: its `items` and the `next_cursor`. Named
    `<Item>Page` after `<Item>Out` unless `name` is given (the OpenAPI component's name)."""
    name = name or item.__name__.removesuffix("Out") + "Page"
    return Schema.from_dict({"items": fields.List(fields.Nested(item)),
                             "next_cursor": fields.String(allow_none=True)}, name=name)


class PageArgs(Schema):
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=1024))


def paginate(
    session: Session,
    stmt: Select[Any],
    sort: InstrumentedAttribute[Any],
    tie: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> tuple[Sequence[Any], str | None]:
    """One page of `stmt` ordered by (`sort`, `tie`) — descending when `newest_first` — and
    the cursor of the next page."""
    if cursor:
        sort_value, tie_value = _decode(cursor, is_time=_is_time(sort))
        key, after = tuple_(sort, tie), tuple_(sort_value, tie_value)
        stmt = stmt.where(key < after if newest_first else key > after)
    order = (sort.desc(), tie.desc()) if newest_first else (sort, tie)
    rows = session.scalars(stmt.order_by(*order).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(getattr(last, sort.key), getattr(last, tie.key))


def _is_time(column: InstrumentedAttribute[Any]) -> bool:
    return column.key.endswith("_at")


def _encode(sort_value: Any, tie_value: Any) -> str:
    if isinstance(sort_value, datetime):
        sort_value = sort_value.isoformat()
    raw = json.dumps([sort_value, tie_value]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, *, is_time: bool) -> tuple[Any, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise TypeError
        sort_value, tie_value = decoded
        # Every sort key is text or a timestamp (as ISO text); anything else, or text the
        # database cannot hold, was not issued by this API.
        if not all(isinstance(v, str) and "\x00" not in v for v in decoded):
            raise TypeError
        "".join(decoded).encode("utf-8")  # lone surrogates raise UnicodeEncodeError
        if is_time:
            sort_value = datetime.fromisoformat(sort_value)
        return sort_value, tie_value
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ValidationError("invalid cursor", {"cursor": ["not a cursor this API issued"]}) \
            from exc
