"""The Lua scripts of the broker: each one is a step that must not be split.

Times come from the Redis server clock (`TIME`), so worker and scheduler clocks never matter.
Scripts that touch keys of different hash tags (ack with counters, dead-lettering, lease
renewal) assume a single Redis primary, which is what this edition runs on. XACK and XPENDING
run under `pcall`: a group destroyed meanwhile (its subscription deleted) must not fail the
acks of other deliveries batched with it.
"""

from __future__ import annotations

from redis import Redis

#: Park a retry: KEYS due set, payload hash; ARGV id, delay ms, encoded message.
SCHEDULE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
"""

#: Release due retries into the pool's direct stream, atomically (two releasers never
#: double-release): KEYS due set, payload hash, pool stream; ARGV batch size, stream cap.
RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'd', data)
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""

#: Acknowledge a delivery and count its outcome, only if it was still pending (a reclaimed
#: duplicate finished elsewhere is not counted twice): KEYS stream, counters;
#: ARGV group, entry id, delete entry (1 on a pool stream), counter field or "".
ACK = """
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[4], 1) end
end
return acked
"""

#: Acknowledge a batch of deliveries (see ACK), in one round trip: KEYS (stream, counters)
#: per delivery; ARGV (group, entry id, delete entry, counter field or "") per delivery.
ACK_MANY = """
for i = 1, #KEYS, 2 do
  local j = (i - 1) * 2
  local group, id, del, field = ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  if redis.pcall('XACK', KEYS[i], group, id) == 1 then
    if del == '1' then redis.call('XDEL', KEYS[i], id) end
    if field ~= '' then redis.call('HINCRBY', KEYS[i + 1], field, 1) end
  end
end
return #KEYS / 2
"""

#: Dead-letter a delivery: XACK first, and only if that removed a pending entry, store the
#: dead-letter entry, publish it on the dead-letter topic and count it, so a message reclaimed
#: and failed twice is dead-lettered once. KEYS stream, dead-letter stream, counters,
#: dead-letter topic stream; ARGV group, entry id, delete entry, dead-letter entry JSON,
#: original envelope JSON, topic envelope JSON, count a failed attempt (1/0), caps.
DEAD_LETTER = """
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked ~= 1 then return false end
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'e', ARGV[4], 'm', ARGV[5])
local offset = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'm', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[3], 'failed', 1) end
return offset
"""

#: Renew the lease of held entries, but only those this consumer still owns (a worker that
#: stalled past the timeout must not steal back what another worker reclaimed). XCLAIM JUSTID
#: resets the idle time without counting a delivery. KEYS one stream per entry;
#: ARGV (group, entry id, consumer) per entry. Returns the ids now owned by another consumer
#: (entries no longer pending were acked meanwhile: nothing to renew).
RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local group, id, consumer = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local p = redis.pcall('XPENDING', key, group, id, id, 1)
  if type(p) ~= 'table' or p.err then p = {} end
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', key, group, consumer, 0, id, 'JUSTID')
  elseif p[1] then
    lost[#lost + 1] = id
  end
end
return lost
"""

#: Redrive dead letters back to one subscription through the pool stream:
#: KEYS dead-letter stream, pool stream; ARGV cap, then (entry id, encoded message) pairs.
REDRIVE = """
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i + 1])
    n = n + 1
  end
end
return n
"""


class Scripts:
    """The scripts registered on one client (EVALSHA, loaded on first use)."""

    def __init__(self, client: Redis) -> None:
        self.schedule = client.register_script(SCHEDULE)
        self.release = client.register_script(RELEASE)
        self.ack = client.register_script(ACK)
        self.ack_many = client.register_script(ACK_MANY)
        self.dead_letter = client.register_script(DEAD_LETTER)
        self.renew = client.register_script(RENEW)
        self.redrive = client.register_script(REDRIVE)
