"""Functions that the function-handler tests name (allowed by the tests' settings)."""

from __future__ import annotations

import asyncio
import json
from json import dumps  # noqa: F401  (a name imported from a module that is not allowed)
from typing import Any

from handlers.base import PermanentFailure

CALLS: list[tuple[Any, dict[str, str]]] = []
NOT_CALLABLE = {"a": 1}


def remember(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    CALLS.append((payload, headers))
    return {"seen": payload, "source": headers.get("source")}


async def remember_later(payload: Any, headers: dict[str, str]) -> list[Any]:
    await asyncio.sleep(0.01)
    CALLS.append((payload, headers))
    return ["async", payload]


async def sleep_forever(payload: Any, headers: dict[str, str]) -> None:
    await asyncio.sleep(3600)


def explode(payload: Any, headers: dict[str, str]) -> None:
    raise RuntimeError("the function failed")


def refuse(payload: Any, headers: dict[str, str]) -> None:
    raise PermanentFailure("this order can never be processed")


def returns_object(payload: Any, headers: dict[str, str]) -> object:
    return object()


def returns_nothing(payload: Any, headers: dict[str, str]) -> None:
    return None


def returns_huge(payload: Any, headers: dict[str, str]) -> str:
    return "x" * 100_000


def mutate_headers(payload: Any, headers: dict[str, str]) -> None:
    headers["added"] = "by the function"


def append_line(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """Appends the payload and headers as a JSON line to the file the `x-out` header names
    (lets a test see what a function ran by a worker process received)."""
    with open(headers["x-out"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"payload": payload, "headers": headers}) + "\n")
    return {"appended": True}
