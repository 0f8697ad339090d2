"""Order functions for `function` subscriptions.

`record_order` is what a subscription names as `"examples.orders:record_order"`: it checks
the order, logs it and returns a summary, which the delivery record keeps as its excerpt.
An order without an `order_id` raises, so the delivery is retried and, in the end,
dead-lettered. `notify_shipping` is the same idea written as a coroutine.

`ORDERS_TABLE` is the table the walk-through's `database` subscription writes to;
`python -m examples.orders <SQLAlchemy URL>` creates it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from sqlalchemy import create_engine, text

log = logging.getLogger(__name__)

ORDERS_TABLE = """
CREATE TABLE IF NOT EXISTS orders (
    order_id   VARCHAR(64) PRIMARY KEY,
    customer   VARCHAR(200) NOT NULL,
    total      NUMERIC(12, 2) NOT NULL,
    region     VARCHAR(32),
    source     VARCHAR(200)
)
"""


class InvalidOrder(ValueError):
    """An order the functions cannot work with."""


def order_total(payload: Any) -> float:
    """The order's total: its `total`, or the sum of its items' `price * quantity`."""
    if not isinstance(payload, dict):
        raise InvalidOrder("an order is a JSON object")
    if "total" in payload:
        return float(payload["total"])
    items = payload.get("items") or []
    return round(sum(float(item.get("price", 0)) * int(item.get("quantity", 1))
                     for item in items), 2)


def record_order(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """Check and log one order; the summary returned is recorded with the delivery."""
    if not isinstance(payload, dict) or not payload.get("order_id"):
        raise InvalidOrder("the order has no order_id")
    summary = {
        "order_id": payload["order_id"],
        "total": order_total(payload),
        "source": headers.get("source", "unknown"),
    }
    log.info("order recorded", extra={"order": summary})
    return summary


async def notify_shipping(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """An async handler: awaits (as a call to a shipping service would) and answers."""
    await asyncio.sleep(0)
    if not isinstance(payload, dict) or not payload.get("order_id"):
        raise InvalidOrder("the order has no order_id")
    return {"shipment_for": payload["order_id"], "region": payload.get("region", "unknown")}


def create_orders_table(url: str) -> None:
    """Create the walk-through's `orders` table in the database at `url` (if missing)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(ORDERS_TABLE))
    engine.dispose()


if __name__ == "__main__":
    create_orders_table(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///shop.db")
