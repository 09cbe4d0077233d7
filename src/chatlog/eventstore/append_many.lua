-- Several independent appends (each one aggregate's batch, as append.lua
-- takes it) in one call: a group commit of concurrent appends to one partition.
--
-- KEYS[1] stream, KEYS[2] versions hash, then per append: its aggregate index
-- list, then the event-id key of each of its events.
-- ARGV[1] idempotency window in ms, ARGV[2] number of appends, then per
-- append: aggregate key, expected version (-1: any), n events, then 4 per
-- event: id, flagged ('1' = client id, deduplicate), type, body.
--
-- Returns, per append in order: its status, the count c of values that
-- follow, then those values:
--   'ok'|'dup' pos1 ver1 ... | 'conflict' current | 'partial' i | 'err' message
-- Each append is as atomic as with append.lua, and an error in one (a
-- WRONGTYPE key, say) does not touch the others.
local stream, versions = KEYS[1], KEYS[2]
local window = ARGV[1]

local function append(index, aggregate, expected, n, ev0, key0)
  local seen, nseen = {}, 0
  for i = 1, n do
    if ARGV[ev0 + (i - 1) * 4 + 1] == '1' then
      local prior = redis.call('GET', KEYS[key0 + i - 1])
      if prior then
        nseen = nseen + 1
        seen[i] = prior
      end
    end
  end
  if nseen > 0 then
    if nseen ~= n then
      for i = 1, n do
        if not seen[i] then return {'partial', i} end
      end
    end
    local out = {'dup'}
    for i = 1, n do
      local sep = string.find(seen[i], ' ', 1, true)
      out[#out + 1] = string.sub(seen[i], 1, sep - 1)
      out[#out + 1] = string.sub(seen[i], sep + 1)
    end
    return out
  end
  local current = tonumber(redis.call('HGET', versions, aggregate) or '0')
  if expected >= 0 and current ~= expected then
    return {'conflict', tostring(current)}
  end
  local out = {'ok'}
  for i = 1, n do
    local base = ev0 + (i - 1) * 4
    local version = tostring(current + i)
    local pos = redis.call('XADD', stream, '*',
      'i', ARGV[base], 't', ARGV[base + 2], 'a', aggregate, 'v', version, 'b', ARGV[base + 3])
    redis.call('RPUSH', index, pos)
    if ARGV[base + 1] == '1' then
      redis.call('SET', KEYS[key0 + i - 1], pos .. ' ' .. version, 'PX', window)
    end
    out[#out + 1] = pos
    out[#out + 1] = version
  end
  redis.call('HSET', versions, aggregate, tostring(current + n))
  return out
end

local out = {}
local k, a = 3, 3  -- this append's index key in KEYS, its aggregate in ARGV
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a + 2])
  local ok, res = pcall(append, KEYS[k], ARGV[a], tonumber(ARGV[a + 1]), n, a + 3, k + 1)
  if not ok then
    res = {'err', type(res) == 'table' and (res.err or '?') or tostring(res)}
  end
  out[#out + 1] = res[1]
  out[#out + 1] = #res - 1
  for i = 2, #res do out[#out + 1] = res[i] end
  k = k + 1 + n
  a = a + 3 + 4 * n
end
return out
