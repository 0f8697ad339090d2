"""Delivery outcomes: one name each, and the words of the contract unchanged."""

from broker.outcomes import DeliveryOutcome


def test_each_outcome_keeps_its_stored_status_counter_and_metric_label() -> None:
    seen = {o: (o.value, o.counter, o.metric_status, o.recorded) for o in DeliveryOutcome}
    assert seen == {
        DeliveryOutcome.DELIVERED: ("success", "delivered", "consumed", True),
        DeliveryOutcome.FAILED: ("failed", "failed", "failed", True),
        DeliveryOutcome.FILTERED: ("filtered", "filtered", "filtered", True),
        DeliveryOutcome.EXPIRED: ("expired", "", None, True),
        DeliveryOutcome.DEAD_LETTERED: ("dead_letter", "dead_lettered", "dead_letter", True),
        DeliveryOutcome.DROPPED: ("dropped", "", None, False),
        DeliveryOutcome.HANDED_BACK: ("handback", "", None, False),
    }


def test_an_outcome_is_the_text_it_stores() -> None:
    assert DeliveryOutcome.DELIVERED == "success"
    assert f"{DeliveryOutcome.DEAD_LETTERED}" == "dead_letter"
