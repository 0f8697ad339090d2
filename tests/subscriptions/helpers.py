"""Helpers of the subscription tests: bodies, Redis access, control-stream reads."""

from __future__ import annotations

import uuid
from typing import Any

from redis import Redis

from broker.keys import Keys, group_name
from tests.conftest import REDIS_URL, TenantHandle

HOOK = "https://hooks.example.com/orders"


def body(topic: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid create body for `topic`."""
    return {"topic": topic, "consumer_group": fields.pop("consumer_group", f"g-{_tag()}"),
            "handler_config": fields.pop("handler_config", {"type": "http", "url": HOOK}),
            **fields}


def subscribe(tenant: TenantHandle, topic: str, **fields: Any) -> dict[str, Any]:
    response = tenant.admin.post("/subscriptions", body(topic, **fields))
    assert response.status_code == 201, response.json
    return response.json


def publish(tenant: TenantHandle, topic: str, count: int, **fields: Any) -> list[str]:
    """Publish `count` messages; returns their offsets."""
    offsets = []
    for n in range(count):
        response = tenant.admin.post("/publish", {"topic": topic, "payload": {"n": n}, **fields})
        assert response.status_code == 201, response.json
        offsets.append(response.json["offset"])
    return offsets


def _tag() -> str:
    return uuid.uuid4().hex[:8]


class RedisView:
    """Direct reads of the broker state the API is expected to leave behind."""

    def __init__(self, namespace: str) -> None:
        self.redis = Redis.from_url(REDIS_URL, decode_responses=True)
        self.keys = Keys(namespace)

    def groups(self, topic_id: str, partition: int = 0) -> dict[str, dict[str, Any]]:
        key = self.keys.stream(topic_id, partition)
        if not self.redis.exists(key):
            return {}
        return {g["name"]: g for g in self.redis.xinfo_groups(key)}

    def group(self, tenant_id: str, consumer_group: str, topic_id: str,
              partition: int = 0) -> dict[str, Any] | None:
        return self.groups(topic_id, partition).get(group_name(tenant_id, consumer_group))

    def control_events(self, after: str = "-") -> list[dict[str, str]]:
        return [fields for _id, fields in self.redis.xrange(self.keys.control, after, "+")]

    def control_tip(self) -> str:
        last = self.redis.xrevrange(self.keys.control, "+", "-", count=1)
        return f"({last[0][0]}" if last else "-"
