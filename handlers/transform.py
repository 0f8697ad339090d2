"""`handler_config.transform`: a JMESPath expression over `{payload, headers, key}`.

Its result is the payload the handler receives. Expressions are compiled once (and checked at
subscription time by `compile_expression`, whose `TransformError` becomes a 422); at delivery a
runtime error (a function given the wrong type, say) cannot be helped by retrying, so the
pipeline fails the delivery as permanent.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

MAX_EXPRESSION = 10_000


class TransformError(ValueError):
    """An expression that does not compile."""


@lru_cache(maxsize=512)
def compile_expression(expression: str) -> ParsedResult:
    if not isinstance(expression, str) or not expression.strip():
        raise TransformError("a transform is a non-empty JMESPath expression")
    if len(expression) > MAX_EXPRESSION:
        raise TransformError(f"a transform is at most {MAX_EXPRESSION} characters")
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise TransformError(f"not a JMESPath expression: {_first_line(exc)}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise TransformError(f"not a JMESPath expression: {type(exc).__name__}") from None


def transform(expression: str, document: dict[str, Any]) -> Any:
    """The expression's result over `document`; raises `JMESPathError` (or a `TypeError`
    from a function) when the data does not fit the expression."""
    return compile_expression(expression).search(document)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
