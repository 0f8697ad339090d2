"""`message_filter`: the SNS-style filter policy of docs/api.md.

A policy maps message paths (see `handlers.paths`) to a list of conditions; a message
matches when every path of the policy matches, and a path matches when any of its conditions
matches any of the path's values. Conditions:

- an exact string, number, boolean or `null` (numbers compare by value, `1 == 1.0`, and never
  equal a boolean);
- `{"prefix": "eu-"}` (strings only);
- `{"numeric": [">", 100]}` or a range `{"numeric": [">", 0, "<=", 100]}` (numbers only;
  operators `=`, `<`, `<=`, `>`, `>=`);
- `{"exists": true|false}` (whether the path is present at all);
- `{"anything-but": [...]}` or `{"anything-but": value}`: present and none of the listed exact
  values (or `{"anything-but": {"prefix": "x"}}`: present and not starting with it).

Arrays in the message are looked through: `payload.items.sku` reaches the `sku` of every
element of `items`, and a field whose value is an array matches if any element matches.
A single condition may be given without the list around it.

`compile_policy` checks a policy once (at subscription time, where its `FilterPolicyError`
becomes a 422) and returns a `Policy` whose `matches` never raises on any JSON message.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers.paths import MISSING, path_problem, split

MAX_PATHS = 50
MAX_CONDITIONS = 150
MAX_TEXT = 4096
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
LOWER = (">", ">=")
UPPER = ("<", "<=")
OPERATORS = ("prefix", "numeric", "exists", "anything-but")


class FilterPolicyError(ValueError):
    """An invalid policy; `problems` maps a policy key (or `_policy`) to messages."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__("invalid filter policy")
        self.problems = problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality of two scalars: numbers by value, never a boolean against a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    return isinstance(a, str) and isinstance(b, str) and a == b


@dataclass(frozen=True)
class Exact:
    value: Any

    def test(self, candidate: Any) -> bool:
        return _same(self.value, candidate)


@dataclass(frozen=True)
class Prefix:
    prefix: str

    def test(self, candidate: Any) -> bool:
        return isinstance(candidate, str) and candidate.startswith(self.prefix)


@dataclass(frozen=True)
class Numeric:
    comparisons: tuple[tuple[str, float], ...]

    def test(self, candidate: Any) -> bool:
        if not _is_number(candidate):
            return False
        return all(COMPARISONS[op](candidate, bound) for op, bound in self.comparisons)


@dataclass(frozen=True)
class AnythingBut:
    excluded: tuple[Exact | Prefix, ...]

    def test(self, candidate: Any) -> bool:
        return not any(condition.test(candidate) for condition in self.excluded)


@dataclass(frozen=True)
class Exists:
    present: bool


Condition = Exact | Prefix | Numeric | AnythingBut | Exists


@dataclass(frozen=True)
class PathRule:
    root: str
    segments: tuple[str, ...]
    conditions: tuple[Condition, ...]

    def matches(self, document: dict[str, Any]) -> bool:
        present, candidates = _candidates(document, self.root, self.segments)
        for condition in self.conditions:
            if isinstance(condition, Exists):
                if condition.present == present:
                    return True
            elif any(condition.test(candidate) for candidate in candidates):
                return True
        return False


@dataclass(frozen=True)
class Policy:
    rules: tuple[PathRule, ...]

    def matches(self, document: dict[str, Any]) -> bool:
        """Whether the message document `{payload, headers, key}` passes the policy."""
        return all(rule.matches(document) for rule in self.rules)


def compile_policy(policy: Any) -> Policy:
    """The checked policy; raises `FilterPolicyError` with every problem found."""
    if not isinstance(policy, dict):
        raise FilterPolicyError({"_policy": ["must be an object of path -> conditions"]})
    if len(policy) > MAX_PATHS:
        raise FilterPolicyError({"_policy": [f"at most {MAX_PATHS} paths"]})
    problems: dict[str, list[str]] = {}
    rules = []
    for path, conditions in policy.items():
        try:
            rules.append(_rule(path, conditions))
        except _Invalid as exc:
            problems[str(path)[:MAX_TEXT]] = [str(exc)]
    if problems:
        raise FilterPolicyError(problems)
    return Policy(tuple(rules))


class _Invalid(ValueError):
    pass


def _rule(path: Any, conditions: Any) -> PathRule:
    problem = path_problem(path)
    if problem:
        raise _Invalid(problem)
    if not isinstance(conditions, list):
        conditions = [conditions]
    if not conditions:
        raise _Invalid("give at least one condition")
    if len(conditions) > MAX_CONDITIONS:
        raise _Invalid(f"at most {MAX_CONDITIONS} conditions")
    root, segments = split(path)
    return PathRule(root, tuple(segments), tuple(_condition(item) for item in conditions))


def _condition(item: Any) -> Condition:
    if isinstance(item, dict):
        return _operator(item)
    return _exact(item)


def _exact(item: Any) -> Exact:
    if isinstance(item, str):
        if len(item) > MAX_TEXT:
            raise _Invalid(f"a string is at most {MAX_TEXT} characters")
        return Exact(item)
    if item is None or isinstance(item, bool):
        return Exact(item)
    if _is_number(item):
        if not math.isfinite(item):
            raise _Invalid("numbers must be finite")
        return Exact(item)
    raise _Invalid("a condition is a string, number, boolean, null or an operator object "
                   f"({', '.join(OPERATORS)})")


def _operator(item: dict[str, Any]) -> Condition:
    if len(item) != 1:
        raise _Invalid("an operator object has exactly one operator")
    name, argument = next(iter(item.items()))
    if name == "prefix":
        return _prefix(argument)
    if name == "numeric":
        return _numeric(argument)
    if name == "exists":
        if not isinstance(argument, bool):
            raise _Invalid("'exists' takes true or false")
        return Exists(argument)
    if name == "anything-but":
        return _anything_but(argument)
    raise _Invalid(f"unknown operator {str(name)[:50]!r} (known: {', '.join(OPERATORS)}; "
                   "nested fields are named by dotted paths: 'payload.customer.tier')")


def _prefix(argument: Any) -> Prefix:
    if not isinstance(argument, str) or not argument:
        raise _Invalid("'prefix' takes a non-empty string")
    if len(argument) > MAX_TEXT:
        raise _Invalid(f"a prefix is at most {MAX_TEXT} characters")
    return Prefix(argument)


def _numeric(argument: Any) -> Numeric:
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise _Invalid("'numeric' takes one or two comparisons: [\">\", 0] or "
                       "[\">\", 0, \"<=\", 100]")
    pairs = [(argument[i], argument[i + 1]) for i in range(0, len(argument), 2)]
    for op, bound in pairs:
        if op not in COMPARISONS:
            raise _Invalid(f"'numeric' operators are {', '.join(COMPARISONS)}")
        if not _is_number(bound) or not math.isfinite(bound):
            raise _Invalid("'numeric' compares with finite numbers")
    if len(pairs) == 2:
        _check_range(pairs)
    return Numeric(tuple(pairs))


def _check_range(pairs: list[tuple[str, Any]]) -> None:
    ops = {op for op, _ in pairs}
    lower = [bound for op, bound in pairs if op in LOWER]
    upper = [bound for op, bound in pairs if op in UPPER]
    if len(lower) != 1 or len(upper) != 1 or "=" in ops:
        raise _Invalid("a 'numeric' range has one lower bound (>, >=) and one upper (<, <=)")
    if lower[0] > upper[0]:
        raise _Invalid("the 'numeric' range is empty")


def _anything_but(argument: Any) -> AnythingBut:
    if isinstance(argument, dict):
        if set(argument) != {"prefix"}:
            raise _Invalid("'anything-but' takes values, or {\"prefix\": \"…\"}")
        return AnythingBut((_prefix(argument["prefix"]),))
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise _Invalid("'anything-but' needs at least one value")
    if len(values) > MAX_CONDITIONS:
        raise _Invalid(f"'anything-but' takes at most {MAX_CONDITIONS} values")
    return AnythingBut(tuple(_exact(value) for value in values))


def _candidates(document: dict[str, Any], root: str,
                segments: tuple[str, ...]) -> tuple[bool, list[Any]]:
    """Whether the path is present, and the values it reaches (arrays looked through)."""
    value = document.get(root, MISSING) if isinstance(document, dict) else MISSING
    if value is MISSING or (root == "key" and value is None):
        return False, []
    current = [value]
    for segment in segments:
        current = [found for item in current for found in _down(item, segment)]
        if not current:
            return False, []
    if len(current) == 1 and not isinstance(current[0], list):
        return True, current
    return True, _leaves(current)


def _down(value: Any, segment: str) -> list[Any]:
    """The values one segment below `value`, looking through (nested) arrays."""
    found: list[Any] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if segment in item:
                found.append(item[segment])
        elif isinstance(item, list):
            if segment.isdigit() and segment.isascii() and int(segment) < len(item):
                found.append(item[int(segment)])
            pending.extend(reversed(item))
    return found


def _leaves(values: list[Any]) -> list[Any]:
    """Every value, with arrays (at any depth) replaced by their elements."""
    leaves: list[Any] = []
    pending = list(reversed(values))
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            leaves.append(item)
    return leaves
