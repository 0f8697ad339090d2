"""The rate rings: per-second slots for the last minute's rates, per-minute slots for the
dashboard's 15-minute history."""

from __future__ import annotations

import uuid

from broker.rates import HISTORY_MIN, RING_S, WINDOW_S, Rates, Tally

NOW = 1_800_000_000  # a whole minute


def test_history_counts_each_minute_and_drops_what_is_older(redis_client, keys):
    rates = Rates(redis_client, keys)
    topic = str(uuid.uuid4())
    rates.record_published(topic, 3, 300, now=NOW - 20 * 60)  # older than the history
    rates.record_published(topic, 4, 400, now=NOW - 14 * 60 + 5)  # the oldest minute shown
    rates.record_published(topic, 2, 200, now=NOW - 50)
    rates.record_published(topic, 5, 500, now=NOW - 10)  # same minute as the one above
    rates.record_published(topic, 1, 100, now=NOW + 30)  # the current minute

    [history] = rates.history([topic], now=NOW + 30).values()
    assert len(history) == HISTORY_MIN
    assert history[0] == (4, 400)
    assert history[-2] == (7, 700)
    assert history[-1] == (1, 100)
    assert sum(a for a, _ in history) == 12

    window = rates.windows([topic], now=NOW + 30)[topic]
    assert (window.a, window.b) == (1 + 5, 100 + 500)  # per-second ring: the last 60 s only
    assert WINDOW_S < RING_S


def test_deliveries_fill_both_rings(redis_client, keys):
    rates = Rates(redis_client, keys)
    subscription = str(uuid.uuid4())
    tally = Tally()
    tally.add(NOW - 1, ok=3, failed=1)
    tally.add(NOW - 2, ok=2)
    rates.record_deliveries({subscription: tally})
    assert rates.history([subscription], now=NOW)[subscription][-2] == (5, 1)
    assert rates.windows([subscription], now=NOW)[subscription].a == 5
    assert rates.history([], now=NOW) == {}
