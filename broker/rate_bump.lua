-- Add to one per-second slot and one per-minute slot of a rate ring (see rates.py).
-- KEYS second ring hash, minute ring hash (one hash tag);
-- ARGV second, a, b, second ring size, idle expiry (s), minute ring size.
local function bump(key, at, size, a, b)
  local slot = tostring(tonumber(at) % size)
  local old = redis.call('HGET', key, slot)
  if old then
    local s, oa, ob = string.match(old, '^(%d+),(%d+),(%d+)$')
    if s == at then a, b = a + tonumber(oa), b + tonumber(ob) end
  end
  redis.call('HSET', key, slot, at .. ',' .. a .. ',' .. b)
  redis.call('EXPIRE', key, ARGV[5])
end
local a, b = tonumber(ARGV[2]), tonumber(ARGV[3])
bump(KEYS[1], ARGV[1], tonumber(ARGV[4]), a, b)
bump(KEYS[2], tostring(math.floor(tonumber(ARGV[1]) / 60)), tonumber(ARGV[6]), a, b)
return 1
