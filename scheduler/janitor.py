"""Housekeeping of consumer groups: remove consumers that are idle and hold nothing.

Every worker start adds a consumer (`<consumer_name>@<instance>`) to each group it reads, so
without reaping the consumer lists grow with every restart. `XGROUP DELCONSUMER` drops the
consumer's pending entries, so only consumers with nothing pending and idle for longer than
`IDLE_MS` are removed (and the `abandoned` parking consumer once it is empty).
"""

from __future__ import annotations

from sqlalchemy import select

from broker.connection import RedisClient
from broker.keys import Keys, group_name
from broker.scripts import LuaScript
from models import Database, Subscription, Topic
from mq.settings import Settings

IDLE_MS = 3_600_000


def reap_consumers(settings: Settings, redis: RedisClient, keys: Keys, *,
                   idle_ms: int = IDLE_MS) -> int:
    database = Database(settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            rows = session.execute(
                select(Topic.id, Topic.partition_count, Subscription.tenant_id,
                       Subscription.consumer_group)
                .join(Subscription, Subscription.topic_id == Topic.id).distinct()
            ).all()
    finally:
        database.dispose()
    reap = LuaScript(redis, "scheduler", "consumers_reap")
    removed = 0
    for topic_id, partitions, tenant_id, consumer_group in rows:
        group = group_name(tenant_id, consumer_group)
        for key in keys.streams(topic_id, partitions):
            removed += int(reap(keys=[key], args=[group, idle_ms]))
    return removed
