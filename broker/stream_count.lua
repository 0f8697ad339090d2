-- Counts entries in [ARGV[1], ARGV[2]] up to ARGV[3]; returns {count, last id seen}.
-- KEYS stream.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local n = #entries
if n == 0 then return {0, ''} end
return {n, entries[n][1]}
