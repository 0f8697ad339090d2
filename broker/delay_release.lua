-- Release due delayed messages into their streams. KEYS due set, payload hash, released
-- markers, released offsets; ARGV batch size, stream cap, marker ttl.
-- Returns {now ms, next due ms or -1, member, offset, member, offset, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {now, -1}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    local data = cjson.decode(raw)
    local offset = redis.call('XADD', data['s'], 'MAXLEN', '~', ARGV[2], '*', 'm', data['m'])
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('HSET', KEYS[4], id, offset)
    out[#out + 1] = id
    out[#out + 1] = offset
  end
  redis.call('ZREM', KEYS[1], id)
end
local cutoff = now - tonumber(ARGV[3])
local old = redis.call('ZRANGE', KEYS[3], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, 100)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[2] = tonumber(first[2]) end
return out
