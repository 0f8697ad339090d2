-- Put entries of a pool's direct stream back at its end, for any consumer to read at once
-- (a stopping consumer's unstarted messages). KEYS pool stream; ARGV group, consumer, then
-- entry ids. An entry no longer pending on that consumer (finished, or taken over by another
-- worker) is left alone. Returns how many were put back.
local moved = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local owner = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if owner[1] and owner[1][2] == ARGV[2] then
    local rows = redis.call('XRANGE', KEYS[1], id, id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    if rows[1] then
      redis.call('XADD', KEYS[1], '*', unpack(rows[1][2]))
      moved = moved + 1
    end
  end
end
return moved
