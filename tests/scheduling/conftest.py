"""Scheduling tests reuse the delivery tests' processes, webhook server and subscriptions."""

from tests.delivery.conftest import processes, subscriptions, webhook

__all__ = ["processes", "subscriptions", "webhook"]
