"""Request-body checks that run before any view: media type, JSON syntax, text sanity.

webargs would silently ignore a non-JSON body and report "missing fields"; the contract wants
415 for the wrong media type and 400 for invalid JSON. PostgreSQL and Redis cannot store NUL
characters or lone UTF-16 surrogates, so strings holding them are refused here with 422
instead of failing later as a 500.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Request, g, request

from mq.errors import InvalidJSON, NotFound, UnsupportedMediaType, ValidationError

#: How deeply JSON values may nest. Python code that walks a value recursively (webargs parses
#: the body again, marshmallow, encoders, handlers) must never run out of stack on input.
MAX_DEPTH = 256
TOO_DEEP = f"the request body nests more than {MAX_DEPTH} levels deep"

#: Blueprints whose forms post `application/x-www-form-urlencoded` (the dashboard).
FORM_BLUEPRINTS = frozenset({"dashboard"})

# Escapes that can decode to a NUL or to a (possibly lone) surrogate.
_SUSPICIOUS = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def check_request_body() -> None:
    current = request._get_current_object()  # type: ignore[attr-defined]  # one look-up
    _check_url_text(current)
    if current.method not in {"POST", "PUT", "PATCH"} or not _has_body(current) \
            or current.blueprint in FORM_BLUEPRINTS:
        return
    if not current.is_json:
        raise UnsupportedMediaType("the request body must be application/json")
    g.json_body = parse_json_body(current.get_data(cache=True))  # for webargs
    # (`api.parsing`): parsed once


def parse_json_body(raw: bytes) -> Any:
    """A request body's JSON, refused (`InvalidJSON`, `ValidationError`) as described above."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJSON(TOO_DEEP) from None
    if _too_deep(raw, body):
        raise InvalidJSON(TOO_DEEP)
    if _SUSPICIOUS.search(raw):
        problem = _find_bad_text(body, "")
        if problem:
            path, reason = problem
            raise ValidationError("the request body holds text that cannot be stored",
                                  {path or "body": [reason]})
    return body


def _too_deep(raw: bytes, body: Any) -> bool:
    """Whether `body` nests deeper than MAX_DEPTH (cheap unless the body has many brackets)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    level = [body] if isinstance(body, dict | list) else []
    for _ in range(MAX_DEPTH):
        if not level:
            return False
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, dict | list)]
    return bool(level)


def _reject_constant(name: str) -> None:
    """`NaN` and `Infinity` are not JSON (Python's parser accepts them; PostgreSQL does not)."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _check_url_text(current: Request) -> None:
    """A NUL in the path names nothing that can exist (404); in a query parameter it is 422."""
    if "\x00" in current.path:
        raise NotFound("no such resource")
    if not current.query_string:
        return
    for name, value in current.args.items(multi=True):
        problem = _text_problem(name, name) or _text_problem(value, name)
        if problem:
            raise ValidationError("a query parameter holds text that cannot be stored",
                                  {problem[0]: [problem[1]]})


def _has_body(current: Request) -> bool:
    return bool(current.content_length) or \
        current.headers.get("Transfer-Encoding") == "chunked"


def _find_bad_text(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        return _text_problem(value, path)
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            found = _text_problem(key, child) or _find_bad_text(item, child)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_bad_text(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


def _text_problem(text: str, path: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return path, "NUL characters (\\u0000) are not allowed in text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return path, "unpaired UTF-16 surrogates are not allowed in text"
    return None
