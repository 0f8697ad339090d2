-- Append redriven dead letters to a pool stream, each once (the first step of a redrive; the
-- dead letters are removed from their stream next, under its own hash tag). KEYS pool stream,
-- then one marker per dead letter (`Keys.redrive_marker`, the pool stream's tag); ARGV cap,
-- marker ttl ms, then the encoded messages in the markers' order. Returns how many were
-- appended now.
local n = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i + 1])
    n = n + 1
  end
end
return n
