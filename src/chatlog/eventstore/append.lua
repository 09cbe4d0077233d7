-- Atomic append of a batch of events to one aggregate.
--
-- KEYS[1] stream, KEYS[2] versions hash, KEYS[3] aggregate index list,
-- KEYS[3+i] the event-id key of event i (used only when it is flagged).
-- ARGV[1] aggregate key, ARGV[2] expected version (-1: any),
-- ARGV[3] idempotency window in ms, ARGV[4] n events,
-- then 4 per event: id, flagged ('1' = client id, deduplicate), type, body.
--
-- Returns {'ok', pos1, ver1, ...} | {'dup', pos1, ver1, ...} |
--         {'conflict', current} | {'partial', i}
local stream, versions, index = KEYS[1], KEYS[2], KEYS[3]
local aggregate = ARGV[1]
local expected = tonumber(ARGV[2])
local window = ARGV[3]
local n = tonumber(ARGV[4])

local seen = {}
local nseen = 0
local nflagged = 0
for i = 1, n do
  if ARGV[4 + (i - 1) * 4 + 2] == '1' then
    nflagged = nflagged + 1
    local prior = redis.call('GET', KEYS[3 + i])
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
  local base = 4 + (i - 1) * 4
  local version = tostring(current + i)
  local pos = redis.call('XADD', stream, '*',
    'i', ARGV[base + 1], 't', ARGV[base + 3], 'a', aggregate, 'v', version, 'b', ARGV[base + 4])
  redis.call('RPUSH', index, pos)
  if ARGV[base + 2] == '1' then
    redis.call('SET', KEYS[3 + i], pos .. ' ' .. version, 'PX', window)
  end
  out[#out + 1] = pos
  out[#out + 1] = version
end
redis.call('HSET', versions, aggregate, tostring(current + n))
return out
