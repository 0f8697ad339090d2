-- Renew the lease of held entries of one stream, but only those this consumer still owns (a
-- worker that stalled past the timeout must not steal back what another worker reclaimed).
-- XCLAIM JUSTID resets the idle time without counting a delivery. KEYS stream;
-- ARGV (group, entry id, consumer) per entry. Returns the ids now owned by another consumer
-- (entries no longer pending were acked meanwhile: nothing to renew).
local lost = {}
local key = KEYS[1]
for i = 1, #ARGV, 3 do
  local group, id, consumer = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local p = redis.pcall('XPENDING', key, group, id, id, 1)
  if type(p) ~= 'table' or p.err then p = {} end
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', key, group, consumer, 0, id, 'JUSTID')
  elseif p[1] then
    lost[#lost + 1] = id
  end
end
return lost
