-- Append entries to a partition stream and mark their records as appended, atomically.
-- KEYS stream, markers; ARGV stream cap, markers ttl ms, JSON list of [record id, entry].
-- Returns the entry ids, comma-separated. (One JSON argument and one text reply: thousands
-- of arguments and replies cost redis-py more CPU to pack and parse than the script costs
-- Redis.)
local ids, marks = {}, {}
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', item[2])
  ids[#ids + 1] = id
  marks[#marks + 1] = item[1]
  marks[#marks + 1] = id
end
redis.call('HSET', KEYS[2], unpack(marks))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return table.concat(ids, ',')
