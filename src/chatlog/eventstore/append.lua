-- Atomic append of a batch of events to one aggregate: the function both
-- append scripts share. chatlog.eventstore.store appends one of two entry
-- points to it: APPEND_ONE (one aggregate's batch) or APPEND_MANY (a group
-- commit: several independent appends to one partition in one call).
--
-- append(stream, versions, window, index, aggregate, expected, n, ev0, key0):
-- the partition's stream and versions hash, the idempotency window in ms, the
-- aggregate's index list and key, the expected version (-1: any), n events
-- whose 4 arguments each (id, flagged '1' = client id to deduplicate, type,
-- body) start at ARGV[ev0], and whose event-id keys start at KEYS[key0].
--
-- Returns {'ok', pos1, ver1, ...} | {'dup', pos1, ver1, ...} |
--         {'conflict', current} | {'partial', i}
local function append(stream, versions, window, index, aggregate, expected, n, ev0, key0)
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
