-- Positions a group: at the stream's end ("end") or after a given id with a given read
-- counter ("id"); creates the group (and the stream) when missing, as XGROUP SETID cannot.
-- KEYS stream; ARGV group, mode, id, entries read. Returns the group's last delivered id.
local key, group, mode = KEYS[1], ARGV[1], ARGV[2]
local id, read = ARGV[3], ARGV[4]
if mode == 'end' then
  id, read = '0-0', 0
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then id = info[i + 1] end
      if info[i] == 'entries-added' then read = info[i + 1] end
    end
  end
end
local moved = redis.pcall('XGROUP', 'SETID', key, group, id, 'ENTRIESREAD', read)
if type(moved) == 'table' and moved.err then
  redis.call('XGROUP', 'CREATE', key, group, id, 'MKSTREAM', 'ENTRIESREAD', read)
end
return id
