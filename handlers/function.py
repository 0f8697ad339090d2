"""The `function` handler: `{"function": "package.module:callable"}`, called with
`(payload, headers)`.

Only modules the operator allowed may be named (`MQ_FUNCTION_MODULES`: a module is allowed if
it equals an entry or lies inside a listed package). The callable is one public name of that
module, defined there (a name the module merely imported from elsewhere is refused: the
allow-list names code, not what that code happens to import). The reference is checked when
the subscription is saved (`reference_problem`) and again at every delivery, since the
allow-list may have shrunk since.

An `async` callable (or one returning an awaitable) runs on an event loop kept per worker
thread, bounded by `PROCESSING_TIMEOUT_MS`. The return value is recorded, bounded, as the
delivery's excerpt (JSON when serialisable). Any exception is a retryable failure, except a
`PermanentFailure` the function raises itself, which dead-letters at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from handlers.base import (
    Delivery,
    HandlerFailure,
    HandlerResult,
    PermanentFailure,
    RetryableFailure,
    excerpt,
)
from mq.settings import Settings

REFERENCE = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z]\w*)$")


class FunctionReferenceError(ValueError):
    """A `function` reference that cannot be used."""


def module_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == entry or module.startswith(entry + ".") for entry in allowed)


def resolve(reference: Any, allowed: tuple[str, ...]) -> Callable[..., Any]:
    """The callable `reference` names; raises `FunctionReferenceError` saying why not."""
    match = REFERENCE.match(reference) if isinstance(reference, str) else None
    if match is None:
        raise FunctionReferenceError(
            "expected 'package.module:callable' (a public name, no dots after ':')")
    module_name, name = match["module"], match["name"]
    if not module_allowed(module_name, allowed):
        raise FunctionReferenceError(
            f"module '{module_name}' is not in the allowed function modules (MQ_FUNCTION_MODULES)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FunctionReferenceError(
            f"module '{module_name}' cannot be imported: {type(exc).__name__}") from None
    target = getattr(module, name, None)
    if target is None:
        raise FunctionReferenceError(f"module '{module_name}' has no attribute '{name}'")
    if not callable(target):
        raise FunctionReferenceError(f"'{reference}' is not callable")
    origin = getattr(target, "__module__", None)
    if isinstance(origin, str) and not module_allowed(origin, allowed):
        raise FunctionReferenceError(
            f"'{name}' comes from module '{origin}', which is not allowed")
    return target


def reference_problem(reference: Any, settings: Settings) -> str | None:
    """Why a subscription may not name `reference`, or None."""
    try:
        resolve(reference, settings.mq_function_modules)
    except FunctionReferenceError as exc:
        return str(exc)
    return None


class FunctionHandler:
    def __init__(self, settings: Settings) -> None:
        self.allowed = settings.mq_function_modules
        self.timeout_s = max(settings.processing_timeout_ms, 1) / 1000
        self._loops = _ThreadLoops()

    def deliver(self, config: dict[str, Any], delivery: Delivery) -> HandlerResult:
        reference = config.get("function")
        try:
            target = resolve(reference, self.allowed)
        except FunctionReferenceError as exc:
            raise PermanentFailure(f"function refused: {exc}") from None
        try:
            result = target(delivery.payload, dict(delivery.headers))
            if inspect.isawaitable(result):
                result = self._loops.run(result, self.timeout_s)
        except HandlerFailure:
            raise
        except TimeoutError:
            raise RetryableFailure(f"timed out after {self.timeout_s:g}s") from None
        except Exception as exc:
            raise RetryableFailure(f"{type(exc).__name__}: {str(exc)[:500]}") from None
        return HandlerResult(None, describe(result))

    def close(self) -> None:
        self._loops.close()


def describe(value: Any) -> str | None:
    """The bounded record of a return value: JSON when serialisable, else its repr."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return excerpt(text.encode("utf-8", "replace"))


class _ThreadLoops:
    """One event loop per worker thread, reused across deliveries, closed with the handler."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._runners: list[asyncio.Runner] = []
        self._lock = threading.Lock()

    def run(self, awaitable: Any, timeout_s: float) -> Any:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = asyncio.Runner()
            self._local.runner = runner
            with self._lock:
                self._runners.append(runner)
        return runner.run(_bounded(awaitable, timeout_s))

    def close(self) -> None:
        with self._lock:
            runners, self._runners = self._runners, []
        for runner in runners:
            # One still running in its thread is left to the ending process.
            with contextlib.suppress(RuntimeError):
                runner.close()


async def _bounded(awaitable: Any, timeout_s: float) -> Any:
    return await asyncio.wait_for(awaitable, timeout_s)
