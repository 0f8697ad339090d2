"""Giving held entries back: a stopping consumer's unstarted ones, a paused subscription's.

An entry of a pool's direct stream goes back to the end of that stream, where any consumer of
the pool reads it at once (`RedisStreamsBroker.requeue_direct`). A subscription's entry is
handed back (`Leases.hand_back`: parked on the abandoned consumer, idle "forever"), and every
worker is told to reclaim the subscription now rather than at its next pass.
"""

from __future__ import annotations

from broker.control import announce
from broker.leases import Leases
from broker.pools import PoolBroker
from broker.proxy import StreamProxy


def give_back(broker: PoolBroker, leases: Leases, proxies: list[StreamProxy]) -> None:
    direct = [p.handle for p in proxies if p.handle.direct]
    if direct:
        broker.requeue_direct(direct)
        leases.release(direct)
    topic = [p for p in proxies if not p.handle.direct]
    if topic:
        leases.hand_back([p.handle for p in topic])
        announce_hand_back(broker, topic)


def hand_back_paused(broker: PoolBroker, leases: Leases, proxy: StreamProxy) -> None:
    """A delivery of a paused subscription: it waits, and is delivered once resumed."""
    if proxy.handle.direct:
        # A parked retry waits in the retry set again rather than circling the pool stream.
        broker.enqueue(proxy.message, delay=1000)
        broker.ack_plain(proxy.handle)
    else:
        leases.hand_back([proxy.handle])


def announce_hand_back(broker: PoolBroker, proxies: list[StreamProxy]) -> None:
    """Tell every worker to reclaim these subscriptions now, not at their next pass."""
    for subscription_id in {p.subscription_id for p in proxies if not p.handle.direct}:
        announce(broker.client, broker.keys, "subscription", subscription_id, "upsert")
