-- Take due delayed messages for release (the first step; the append to their streams and
-- `delay_done.lua` follow). Taken members move from the due set to the in-flight set, where
-- they cannot be cancelled; members a releaser took but never finished (it died) are taken
-- again after the retake delay. KEYS due set, payload hash, in-flight set; ARGV batch size,
-- retake after ms. Returns {now ms, member, data, member, data, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local batch = tonumber(ARGV[1])
local out = {now}
local function take(id)
  local raw = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  if raw then
    redis.call('ZADD', KEYS[3], now, id)
    out[#out + 1] = id
    out[#out + 1] = raw
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], '-inf', now - tonumber(ARGV[2]), 'BYSCORE',
                               'LIMIT', 0, batch)) do
  take(id)
end
local room = batch - (#out - 1) / 2
if room > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, room)) do
    take(id)
  end
end
return out
