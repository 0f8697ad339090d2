-- Release due retries into the pool's direct stream, atomically (two releasers never
-- double-release). KEYS due set, payload hash, pool stream; ARGV batch size, stream cap.
-- Returns {how many moved, ms until the next waiting retry is due (-1: none waits)}.
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
local wait = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {#ids, wait}
