"""The publish rate quota holds across API processes: its counter lives in Redis."""

from __future__ import annotations

import time

from api import create_app
from tests.conftest import API, TenantHandle


def test_publish_rate_is_shared_by_two_api_processes(operator, tenant: TenantHandle, settings):
    tenant.create_queue("rated")
    assert operator.put(f"/tenants/{tenant.id}",
                        {"quotas": {"publish_rate": 4}}).status_code == 200
    # A second application instance shares nothing in memory with the first, as a second
    # gunicorn worker or host would not.
    other = create_app(settings).test_client()
    headers = {"Authorization": f"Bearer {tenant.admin.token}"}
    while time.time() % 1 > 0.5:  # start early in a second, so all the posts share it
        time.sleep(0.05)
    statuses = []
    for n in range(8):
        client, path = (tenant.client, API + "/publish") if n % 2 else (other, API + "/publish")
        statuses.append(client.post(path, json={"topic": "rated", "payload": n},
                                    headers=headers).status_code)
    assert statuses.count(201) == 4, statuses
    assert statuses.count(429) == 4, statuses
    refused = statuses.index(429)
    assert all(status == 429 for status in statuses[refused:])
