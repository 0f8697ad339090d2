-- Dead-letter a message of a pool's direct stream that is no subscription delivery (any other
-- dramatiq actor's), in one step: ack and delete the entry, add the message to the pool's
-- dead-letter stream, and drop dead letters older than the ttl. KEYS pool stream, dead-letter
-- stream (one hash tag); ARGV group, entry id, stored message, error text, dead-letter ttl ms,
-- dead-letter stream cap. Returns 1 if dead-lettered now, 0 if the entry was no longer pending
-- (finished or dead-lettered elsewhere meanwhile).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = math.max(0, now - tonumber(ARGV[5]))
redis.call('XADD', KEYS[2], 'MINID', '~', oldest, '*', 'd', ARGV[3], 'e', ARGV[4], 'id', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[6])
return 1
