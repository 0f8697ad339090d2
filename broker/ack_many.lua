-- Acknowledge a batch of deliveries (see ack.lua) in one round trip.
-- KEYS (stream, counters) per delivery; ARGV (group, entry id, delete entry, counter field
-- or "") per delivery. XACK runs under pcall: a group destroyed meanwhile (its subscription
-- deleted) must not fail the acks of other deliveries batched with it.
for i = 1, #KEYS, 2 do
  local j = (i - 1) * 2
  local group, id, del, field = ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  if redis.pcall('XACK', KEYS[i], group, id) == 1 then
    if del == '1' then redis.call('XDEL', KEYS[i], id) end
    if field ~= '' then redis.call('HINCRBY', KEYS[i + 1], field, 1) end
  end
end
return #KEYS / 2
