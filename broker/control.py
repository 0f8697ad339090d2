"""The control plane: changes to subscriptions and topics, announced to every worker.

Writers (the API) call `announce`; workers include `Keys.control` in their blocking wake-up
read, so a change reaches every worker within one read timeout, and a periodic resync from
the database catches anything missed (a stream, unlike pub/sub, keeps events while a worker
reconnects). A worker notes the stream's tip before it loads subscriptions from the database
(`tip`), and its consumers read events from there on, so a change made while it starts is
never missed.
"""

from __future__ import annotations

from typing import Literal, cast

from broker.connection import RedisClient
from broker.keys import Keys
from broker.pools import START

CONTROL_MAX_LEN = 10_000

Kind = Literal["subscription", "topic"]
Op = Literal["upsert", "delete"]


def announce(redis: RedisClient, keys: Keys, kind: Kind, object_id: str, op: Op) -> str:
    """Append a change event; returns its entry id."""
    entry_id = redis.xadd(keys.control, {"kind": kind, "id": object_id, "op": op},
                          maxlen=CONTROL_MAX_LEN, approximate=True)
    return cast(str, entry_id)  # replies are decoded (`broker.connection`)


def tip(redis: RedisClient, keys: Keys) -> str:
    """The id of the newest event (`START` when there is none)."""
    rows = cast(list[tuple[str, object]], redis.xrevrange(keys.control, count=1))
    return rows[0][0] if rows else START
