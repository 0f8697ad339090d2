-- Redrive dead letters back to one subscription through the pool stream.
-- KEYS dead-letter stream, pool stream; ARGV cap, then (entry id, encoded message) pairs.
-- Returns how many were redriven (an entry already gone is skipped).
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i + 1])
    n = n + 1
  end
end
return n
