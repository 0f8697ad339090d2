"""Helpers for the API tests: the contract's error body, Redis and database access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from sqlalchemy.orm import Session

from broker.keys import Keys
from models import Database
from mq.settings import Settings
from tests.conftest import REDIS_URL


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the contract's error body with `status` and `code`; returns `details`."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert isinstance(body["request_id"], str) and body["request_id"]
    return body["error"]["details"]


@pytest.fixture(scope="session")
def redis_client() -> Iterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_namespace)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url, pool_size=2)
    yield db
    db.dispose()


@pytest.fixture
def db(database: Database) -> Iterator[Session]:
    """A session on the test database, for checking what the API stored."""
    session = database.session()
    yield session
    session.close()
