-- Atomic append of a batch of events to one aggregate: the function both
-- append scripts share. chatlog.eventstore.store appends one of two entry
-- points to it: APPEND_ONE (one aggregate's batch) or APPEND_MANY (a group
-- commit: several independent appends to one partition in one call).
--
-- append(stream, versions, window, index, aggregate, expected, n, ev0, key0):
-- the partition's stream and versions hash, the idempotency window in ms, the
-- aggregate's index list and key, the expected version (-1: any), n events
-- whose 4 arguments each (id, flag: how to deduplicate it (see below), type,
-- body) start at ARGV[ev0], and whose event-id keys start at KEYS[key0].
--
-- Returns {'ok', pos1, ver1, ...} | {'dup', pos1, ver1, ...} |
--         {'conflict', current} | {'partial', i} | {'reused', i}
local function append(stream, versions, window, index, aggregate, expected, n, ev0, key0)
  -- Each event's flag: '0' = not deduplicated; '1' = deduplicated for `window`
  -- ms; or '<ms>:<digest>' = deduplicated for <ms> ms, remembering the digest of
  -- its content, so the same id with other content is refused ('reused').
  local seen, nseen, ttl, digest = {}, 0, {}, {}
  for i = 1, n do
    local flag = ARGV[ev0 + (i - 1) * 4 + 1]
    if flag ~= '0' then
      local colon = string.find(flag, ':', 1, true)
      if colon then
        ttl[i] = string.sub(flag, 1, colon - 1)
        digest[i] = string.sub(flag, colon + 1)
      else
        ttl[i] = window
        digest[i] = ''
      end
      local prior = redis.call('GET', KEYS[key0 + i - 1])
      if prior then
        local a = string.find(prior, ' ', 1, true)
        local b = string.find(prior, ' ', a + 1, true)
        local known = b and string.sub(prior, b + 1) or ''
        if known ~= '' and digest[i] ~= '' and known ~= digest[i] then
          return {'reused', i}
        end
        nseen = nseen + 1
        seen[i] = {string.sub(prior, 1, a - 1), string.sub(prior, a + 1, (b or 0) - 1)}
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
      out[#out + 1] = seen[i][1]
      out[#out + 1] = seen[i][2]
    end
    return out
  end
  local current = tonumber(redis.call('HGET', versions, aggregate) or '0')
  if expected >= 0 and current ~= expected then
    return {'conflict', tostring(current)}
  end
  local out = {'ok'}
  -- the project's replay index (Keys.project_index): <tag>:pidx:<project>
  local pidx = string.sub(stream, 1, -4) .. 'pidx:' .. string.match(aggregate, '^[^/]*')
  for i = 1, n do
    local base = ev0 + (i - 1) * 4
    local version = tostring(current + i)
    local pos = redis.call('XADD', stream, '*',
      'i', ARGV[base], 't', ARGV[base + 2], 'a', aggregate, 'v', version, 'b', ARGV[base + 3])
    redis.call('RPUSH', index, pos)
    redis.call('XADD', pidx, pos, 'e', '')
    if ttl[i] then
      redis.call('SET', KEYS[key0 + i - 1], pos .. ' ' .. version .. ' ' .. digest[i],
        'PX', ttl[i])
    end
    out[#out + 1] = pos
    out[#out + 1] = version
  end
  redis.call('HSET', versions, aggregate, tostring(current + n))
  return out
end
