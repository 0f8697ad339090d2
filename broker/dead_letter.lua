-- Dead-letter a delivery: XACK first, and only if that removed a pending entry, store the
-- dead-letter entry, publish it on the dead-letter topic and count it, so a message reclaimed
-- and failed twice is dead-lettered once. KEYS stream, dead-letter stream, counters,
-- dead-letter topic stream; ARGV group, entry id, delete entry, dead-letter entry JSON,
-- original envelope JSON, topic envelope JSON, count a failed attempt (1/0), dead-letter
-- stream cap, topic stream cap. Returns the offset on the dead-letter topic, or false.
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked ~= 1 then return false end
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'e', ARGV[4], 'm', ARGV[5])
local offset = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'm', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[3], 'failed', 1) end
return offset
