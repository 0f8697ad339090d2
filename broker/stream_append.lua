-- Append entries to a partition stream and mark their records as appended, atomically.
-- KEYS stream, markers; ARGV stream cap, markers ttl ms, JSON list of [record id, entry].
-- Returns the entry ids, comma-separated. A record already marked is not appended again (its
-- marked id is answered), so a publisher and the outbox sweep racing over one record append
-- it once. (One JSON argument and one text reply: thousands of arguments and replies cost
-- redis-py more CPU to pack and parse than the script costs Redis.)
local ids, marks = {}, {}
for _, item in ipairs(cjson.decode(ARGV[3])) do
  local id = redis.call('HGET', KEYS[2], item[1])
  if not id then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', item[2])
    marks[#marks + 1] = item[1]
    marks[#marks + 1] = id
  end
  ids[#ids + 1] = id
end
if #marks > 0 then
  redis.call('HSET', KEYS[2], unpack(marks))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return table.concat(ids, ',')
