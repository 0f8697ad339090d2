-- Finish the release of taken messages (`delay_take.lua`) once they are in their streams:
-- drop them from the in-flight set and the payload hash, and remember their offsets in the
-- released markers (trimmed after the marker ttl). KEYS due set, payload hash, in-flight set,
-- released markers, released offsets; ARGV marker ttl ms, retake after ms, then
-- (member, offset) pairs. Returns {now ms, next due ms or -1}: the earliest waiting message,
-- or the retake time of one still in flight.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('HSET', KEYS[5], id, ARGV[i + 1])
end
local cutoff = now - tonumber(ARGV[1])
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
end
local next_due = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then next_due = tonumber(first[2]) end
local stuck = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if stuck[2] then
  local retake = tonumber(stuck[2]) + tonumber(ARGV[2])
  if next_due < 0 or retake < next_due then next_due = retake end
end
return {now, next_due}
