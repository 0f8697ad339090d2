-- Creates a group at the start or the end of a stream (made if missing) with its read
-- counter; an existing group (BUSYGROUP) is left alone. KEYS stream; ARGV group, "start" or
-- "end". Returns the group's last delivered id.
local key, group, where = KEYS[1], ARGV[1], ARGV[2]
local id, read = '0-0', 0
if redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  local added, length, last = 0, 0, '0-0'
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  if where == 'end' then id, read = last, added else read = math.max(0, added - length) end
end
local made = redis.pcall('XGROUP', 'CREATE', key, group, id, 'MKSTREAM', 'ENTRIESREAD', read)
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP') then
  return redis.error_reply(made.err)
end
return id
