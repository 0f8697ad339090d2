"""Deliveries built by hand for handler tests: no Redis involved."""

from __future__ import annotations

import uuid
from typing import Any

from handlers.base import Delivery


def make_delivery(payload: Any = None, *, headers: dict[str, str] | None = None,
                  key: str | None = None, attempt: int = 1) -> Delivery:
    return Delivery(
        subscription_id="sub-1", message_id=f"msg-{uuid.uuid4().hex[:8]}", topic="orders",
        partition=0, offset="1-0", payload=payload, published_ms=1_732_725_848_123,
        attempt=attempt, key=key, headers=dict(headers or {}))
