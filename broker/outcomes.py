"""How a delivery attempt ends: one name per outcome, mapped to the words each audience uses.

The value is the `status` of the attempt's consumption record, stored in the database and
shown by `GET /subscriptions/{id}/deliveries`. The same outcome is counted under other names
that are part of the contract too and must not change: the subscription's counters in Redis
(`counter`, shown as the `*_total` stats) and the `status` label of `mq_messages_total`
(`metric_status`). Handlers never see outcomes: they return or raise, and the worker turns
that into one.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryOutcome(StrEnum):
    DELIVERED = "success"
    FAILED = "failed"
    FILTERED = "filtered"
    EXPIRED = "expired"
    DEAD_LETTERED = "dead_letter"
    #: Never started: the subscription was deleted (the entry is acknowledged, not recorded).
    DROPPED = "dropped"
    #: Never started: the subscription or topic is paused (the entry waits, not recorded).
    HANDED_BACK = "handback"

    @property
    def recorded(self) -> bool:
        """Whether the attempt leaves a consumption record."""
        return self not in (DeliveryOutcome.DROPPED, DeliveryOutcome.HANDED_BACK)

    @property
    def counter(self) -> str:
        """The field of `Keys.subscription_counters` the outcome adds to ("" for none)."""
        return _COUNTERS.get(self, "")

    @property
    def metric_status(self) -> str | None:
        """The `status` label of `mq_messages_total` (None: not counted there)."""
        return _METRIC_STATUSES.get(self)


_COUNTERS = {
    DeliveryOutcome.DELIVERED: "delivered",
    DeliveryOutcome.FAILED: "failed",
    DeliveryOutcome.FILTERED: "filtered",
    DeliveryOutcome.DEAD_LETTERED: "dead_lettered",  # counted by `dead_letter.lua`
}
_METRIC_STATUSES = {
    DeliveryOutcome.DELIVERED: "consumed",
    DeliveryOutcome.FAILED: "failed",
    DeliveryOutcome.FILTERED: "filtered",
    DeliveryOutcome.DEAD_LETTERED: "dead_letter",
}


#: The `status` values a consumption record can hold (the deliveries listing's filter).
RECORDED_STATUSES = tuple(outcome.value for outcome in DeliveryOutcome if outcome.recorded)
