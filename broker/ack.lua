-- Acknowledge a delivery and count its outcome, only if it was still pending (a reclaimed
-- duplicate finished elsewhere is not counted twice). KEYS stream, counters;
-- ARGV group, entry id, delete entry (1 on a pool stream), counter field or "".
-- XACK runs under pcall: a group destroyed meanwhile (its subscription deleted) must not fail.
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[4], 1) end
end
return acked
