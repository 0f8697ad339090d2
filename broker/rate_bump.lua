-- Add to one per-second slot of a rate ring (see rates.py). KEYS ring hash;
-- ARGV second, a, b, ring size, idle expiry (s).
local sec, a, b = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local slot = tostring(tonumber(sec) % tonumber(ARGV[4]))
local old = redis.call('HGET', KEYS[1], slot)
if old then
  local s, oa, ob = string.match(old, '^(%d+),(%d+),(%d+)$')
  if s == sec then a, b = a + tonumber(oa), b + tonumber(ob) end
end
redis.call('HSET', KEYS[1], slot, sec .. ',' .. a .. ',' .. b)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
