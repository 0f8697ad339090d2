"""Every Lua script ships as a `.lua` file that Redis accepts, sent without its comment."""

from importlib import resources

import pytest
from redis import Redis

from broker.scripts import lua_source

SCRIPTS = [(package, entry.name.removesuffix(".lua"))
           for package in ("broker", "scheduler")
           for entry in resources.files(package).iterdir() if entry.name.endswith(".lua")]


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 19


@pytest.mark.parametrize(("package", "name"), SCRIPTS)
def test_a_script_loads_without_its_leading_comment(redis_client: Redis, package: str,
                                                    name: str) -> None:
    source = lua_source(package, name)
    assert source.strip() and not source.startswith("--")
    assert redis_client.script_load(source)
