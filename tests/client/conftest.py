"""The client tests run against the real API process (`mq api`: gunicorn), started once for
this directory on the run's database and Redis namespace; each test has a tenant of its own,
and a proxy (`tests.client.proxy`) in front of the API where it needs to drop a connection or
answer 429/503."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mq_client import Client

from mq.settings import Settings
from tests.client.proxy import Proxy
from tests.conftest import OPERATOR_TOKEN
from tests.processes import running_api

API = "/api/v1/mq"


@dataclass
class Tenant:
    id: str
    admin_key: str
    base: str

    def key(self, role: str) -> str:
        """A new API key of `role` in this tenant."""
        response = httpx.post(f"{self.base}{API}/api-keys", timeout=10,
                              headers={"Authorization": f"Bearer {self.admin_key}"},
                              json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    def set_quotas(self, **quotas: int) -> None:
        response = httpx.put(f"{self.base}{API}/tenants/{self.id}", json={"quotas": quotas},
                             headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="package")
def service(settings: Settings) -> Iterator[str]:
    """The root URL of the real API process."""
    with running_api({**settings.as_environ(), "WEB_CONCURRENCY": "2",
                      "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}) as url:
        yield url


@pytest.fixture
def tenant(service: str) -> Tenant:
    response = httpx.post(f"{service}{API}/tenants", json={"name": f"c-{uuid.uuid4().hex[:12]}"},
                          headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    return Tenant(body["id"], body["admin_key"], service)


@pytest.fixture
def direct(tenant: Tenant) -> Iterator[Client]:
    """A client of the tenant straight to the API, for setting up and checking."""
    with Client(tenant.base, tenant.admin_key) as client:
        yield client


@pytest.fixture
def topic(direct: Client) -> str:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    direct.create_topic(name)
    return name


@pytest.fixture(scope="package")
def proxy(service: str) -> Iterator[Proxy]:
    running = Proxy(service)
    yield running
    running.close()


@pytest.fixture
def via_proxy(proxy: Proxy) -> Iterator[Proxy]:
    """The proxy, with no actions queued and nothing seen."""
    proxy.reset()
    yield proxy
    proxy.reset()


def stored(client: Client, topic: str) -> Any:
    """How many messages the topic's stream holds."""
    return client.get_topic(topic)["stats"]["length"]
