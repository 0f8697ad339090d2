-- Cancel a delayed message. KEYS due set, payload hash; ARGV member.
-- Returns 1 if it was waiting (now removed), else 0.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
