-- Store a dead letter once (the first step of dead-lettering; the dead-letter topic append and
-- the ack of the delivery follow, each under its own hash tag). KEYS dead-letter stream,
-- counters, marker (all of the subscription's tag); ARGV dead-letter entry JSON, original
-- envelope JSON, count a failed attempt (1/0), dead-letter stream cap, marker ttl ms.
-- Returns 1 if stored now, 0 if this delivery was stored before (a retry after a crash, or a
-- duplicate delivery failing twice): the marker holds it for the ttl.
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[1], 'm', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'dead_lettered', 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[2], 'failed', 1) end
return 1
