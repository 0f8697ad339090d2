"""Housekeeping of consumer groups: remove consumers that are idle and hold nothing.

Every worker start adds a consumer (`<consumer_name>@<instance>`) to each group it reads, so
without reaping the consumer lists grow with every restart. `XGROUP DELCONSUMER` drops the
consumer's pending entries, so only consumers with nothing pending and idle for longer than
`IDLE_MS` are removed (and the `abandoned` parking consumer once it is empty).
"""

from __future__ import annotations

from redis import Redis
from sqlalchemy import select

from broker.keys import Keys, group_name
from models import Database, Subscription, Topic
from mq.settings import Settings

IDLE_MS = 3_600_000


def reap_consumers(settings: Settings, redis: Redis, keys: Keys, *, idle_ms: int = IDLE_MS) -> int:
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
    removed = 0
    for topic_id, partitions, tenant_id, consumer_group in rows:
        group = group_name(tenant_id, consumer_group)
        for key in keys.streams(topic_id, partitions):
            removed += _reap_group(redis, key, group, idle_ms)
    return removed


# Atomic, so no entry is delivered to a consumer between the check and the removal.
_REAP = """
local removed = 0
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""


def _reap_group(redis: Redis, key: str, group: str, idle_ms: int) -> int:
    return int(redis.eval(_REAP, 1, key, group, idle_ms))
