"""Fixtures for formats and encryption: the API and worker processes get a master key."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest
from flask import Flask

from mq.settings import Settings
from tests.delivery.conftest import (  # noqa: F401  (fixtures reused by name)
    processes,
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
