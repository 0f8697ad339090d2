-- Park a delayed message. KEYS due set, payload hash, wake channel, released markers,
-- in-flight set; ARGV member, due ms, data. A member already released or being released is
-- not parked again (returns -1); publishes on the wake channel when it is due before
-- everything else waiting.
if redis.call('ZSCORE', KEYS[4], ARGV[1]) or redis.call('ZSCORE', KEYS[5], ARGV[1]) then
  return -1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if not first[2] or tonumber(ARGV[2]) < tonumber(first[2]) then
  redis.call('PUBLISH', KEYS[3], ARGV[2])
end
return 1
