"""Fixtures for formats and encryption: the API and worker processes get a master key.

The package's delivery tests share one worker (`SharedProcesses`): none kills, stops or
reconfigures it; a test that must be alone with its worker asks for `own_processes`."""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from mq.settings import Settings
from tests.delivery.conftest import (  # noqa: F401  (fixtures reused by name)
    Processes,
    SharedProcesses,
    for_one_test,
    own_processes_of,
    subscriptions,
    webhook,
)

MASTER_KEY = os.urandom(32).hex()
OLD_MASTER_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session")
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, mq_master_key=MASTER_KEY,
                               mq_old_master_keys=(OLD_MASTER_KEY,))


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    from api import create_app

    return create_app(settings)


@pytest.fixture(scope="package")
def package_processes(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[SharedProcesses]:
    procs = SharedProcesses(settings, tmp_path_factory.mktemp("processes"))
    yield procs
    procs.close()


@pytest.fixture(name="processes")
def shared_processes(package_processes: SharedProcesses, request: pytest.FixtureRequest
                     ) -> Iterator[SharedProcesses]:
    with for_one_test(package_processes, request) as procs:
        yield procs


@pytest.fixture
def own_processes(package_processes: SharedProcesses, settings: Settings, tmp_path: Path,
                  request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Processes of the test's own, with no shared one running beside them."""
    package_processes.stop_shared()
    with own_processes_of(settings, tmp_path, request) as procs:
        yield procs
