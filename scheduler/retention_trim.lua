-- Trim a stream to a retention cut-off, never past what a consumer group still needs
-- (its smallest pending id, its last delivered id). KEYS stream; ARGV retention cut-off id.
-- Returns how many entries were trimmed.
local function before(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams < bms end
  return tonumber(aseq) < tonumber(bseq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local bound = ARGV[1]
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local keep = f['last-delivered-id']
  if tonumber(f['pending']) > 0 then
    keep = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  if before(keep, bound) then bound = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
