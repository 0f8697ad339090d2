-- Acknowledge deliveries of one stream (every key of a script shares a slot): XACK, plus XDEL
-- on a pool's direct stream. KEYS stream; ARGV (group, entry id, delete entry) per delivery.
-- Returns 1 per delivery that was still pending (its outcome is counted by the caller), else 0.
-- XACK runs under pcall: a group destroyed meanwhile (its subscription deleted) must not fail
-- the acks of other deliveries batched with it.
local acked = {}
for i = 1, #ARGV, 3 do
  local group, id = ARGV[i], ARGV[i + 1]
  local ok = redis.pcall('XACK', KEYS[1], group, id) == 1
  if ok and ARGV[i + 2] == '1' then redis.call('XDEL', KEYS[1], id) end
  acked[#acked + 1] = ok and 1 or 0
end
return acked
