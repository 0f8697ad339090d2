"""The one way Lua scripts are loaded and run.

Each script is a step that must not be split. It lives in a `.lua` file next to the module
that runs it (shipped as package data), whose leading `--` comment says what it takes
(KEYS, ARGV) and answers; the comment is stripped before the script is sent.

Times inside scripts come from the Redis server clock (`TIME`), so worker and scheduler
clocks never matter. Every key a script touches is one of its KEYS and all of them share one
hash tag (one Redis Cluster slot); a move between tags is two scripts, the first of which can
be repeated without effect (`broker.keys`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from redis.client import Pipeline

from broker.connection import RedisClient

Arg = str | int | float


@functools.cache
def lua_source(package: str, name: str) -> str:
    """The text of `<package>/<name>.lua` without its leading comment."""
    text = resources.files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "".join(lines)


class LuaScript:
    """One script registered on a client: run with EVALSHA (loaded on first use), or queued
    on a pipeline with EVAL."""

    def __init__(self, redis: RedisClient, package: str, name: str) -> None:
        self.name = name
        self.source = lua_source(package, name)
        self._registered = redis.register_script(self.source)

    def __call__(self, keys: Sequence[str], args: Iterable[Arg] = ()) -> Any:
        """Run the script now (EVALSHA, loading it where a server lacks it); on a pipeline,
        `queue` it instead."""
        return self._registered(keys=keys, args=args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Iterable[Arg] = ()) -> None:
        """Queue the script on `pipe`. EVAL rather than EVALSHA: a pipeline of registered
        scripts costs an extra round trip (SCRIPT EXISTS) per execute, and Redis caches the
        script by its digest anyway."""
        pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)
