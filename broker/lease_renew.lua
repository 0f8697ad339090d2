-- Renew the lease of held entries, but only those this consumer still owns (a worker that
-- stalled past the timeout must not steal back what another worker reclaimed). XCLAIM JUSTID
-- resets the idle time without counting a delivery. KEYS one stream per entry;
-- ARGV (group, entry id, consumer) per entry. Returns the ids now owned by another consumer
-- (entries no longer pending were acked meanwhile: nothing to renew).
local lost = {}
for i, key in ipairs(KEYS) do
  local group, id, consumer = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local p = redis.pcall('XPENDING', key, group, id, id, 1)
  if type(p) ~= 'table' or p.err then p = {} end
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', key, group, consumer, 0, id, 'JUSTID')
  elseif p[1] then
    lost[#lost + 1] = id
  end
end
return lost
