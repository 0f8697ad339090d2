"""Fixtures of the subscription tests."""

from __future__ import annotations

import pytest

from tests.subscriptions.helpers import subscribe


@pytest.fixture
def tenant_with_orders(tenant):
    """A tenant with a topic `orders` and one subscription to it (`.subscription_id`)."""
    tenant.create_queue("orders")
    tenant.subscription_id = subscribe(tenant, "orders", consumer_group="base")["id"]
    return tenant
