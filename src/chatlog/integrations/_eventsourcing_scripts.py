"""The eventsourcing recorders' scripts (one atomic step per write, reads by index)."""

from __future__ import annotations

from chatlog.integrations._runtime import LUA_ADD_ENTRY

# KEYS: log, versions, sequence, notifications, tracking
# ARGV: base, application ('1'/'0'), then the tracking record (upstream ('' = none), id,
# event id, type, aggregate, body, index), n, then per event 10 values: event id, type,
# aggregate, index, originator digest, originator version, topic, JSON head, JSON tail, blob.
# -> {'ok', position, notification id (0: none)..., [tracking position, 0]} (the shape
# chatlog.eventstore.scripted acknowledges) | {'conflict', i} | {'tracking', current}
_INSERT = LUA_ADD_ENTRY + """
local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256)
end
local base, app, n = ARGV[1], ARGV[2] == '1', tonumber(ARGV[10])
local seen = {}
for i = 0, n - 1 do
  local b = 11 + i * 10
  local okey = base .. ':o:' .. ARGV[b + 4]
  local mark = ARGV[b + 4] .. '#' .. ARGV[b + 5]
  if seen[mark] then return {'conflict', i} end
  seen[mark] = true
  if #redis.call('ZRANGEBYSCORE', okey, ARGV[b + 5], ARGV[b + 5], 'LIMIT', 0, 1) > 0 then
    return {'conflict', i}
  end
end
if ARGV[3] ~= '' then
  local current = redis.call('HGET', KEYS[5], ARGV[3])
  if current and tonumber(current) >= tonumber(ARGV[4]) then return {'tracking', current} end
end
local out = {'ok'}
for i = 0, n - 1 do
  local b = 11 + i * 10
  local doc = ARGV[b + 7]
  local nid = 0
  if app then
    nid = redis.call('INCR', KEYS[3])
    doc = doc .. tostring(nid) .. ARGV[b + 8]
  end
  local body = '\\0' .. be32(#doc) .. doc .. ARGV[b + 9]
  local pos = add_entry(KEYS[1], KEYS[2], ARGV[b + 3], ARGV[b], ARGV[b + 1], ARGV[b + 2], body)
  redis.call('ZADD', base .. ':o:' .. ARGV[b + 4], ARGV[b + 5], pos)
  if app then redis.call('ZADD', KEYS[4], nid, pos .. ' ' .. ARGV[b + 6]) end
  out[#out + 1] = pos
  out[#out + 1] = nid
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
  out[#out + 1] = add_entry(KEYS[1], KEYS[2], ARGV[9], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  out[#out + 1] = 0
end
return out
"""

#: Lua: the body (field ``b``) of an entry's flat field list.
_BODY_OF = """
local function body_of(flat)
  for j = 1, #flat, 2 do
    if flat[j] == 'b' then return flat[j + 1] end
  end
  return ''
end
"""

# KEYS: log, originator zset; ARGV: min, max, desc ('1'/'0'), limit ('' = none)
# -> per event its body, or {position} when the entry left the stream (archived)
_SELECT_EVENTS = _BODY_OF + """
local cmd, lo, hi = 'ZRANGEBYSCORE', ARGV[1], ARGV[2]
if ARGV[3] == '1' then cmd, lo, hi = 'ZREVRANGEBYSCORE', ARGV[2], ARGV[1] end
local r
if ARGV[4] ~= '' then
  r = redis.call(cmd, KEYS[2], lo, hi, 'LIMIT', 0, tonumber(ARGV[4]))
else
  r = redis.call(cmd, KEYS[2], lo, hi)
end
local out = {}
for i = 1, #r do
  local e = redis.call('XRANGE', KEYS[1], r[i], r[i])
  if #e > 0 then out[#out + 1] = body_of(e[1][2]) else out[#out + 1] = {r[i]} end
end
return out
"""

# KEYS: log, notifications; ARGV: min, max, limit, topics...
# -> {notification id, body or {position} when the entry left the stream (archived)}...
_SELECT_NOTIFICATIONS = _BODY_OF + """
local want = nil
if #ARGV > 3 then
  want = {}
  for i = 4, #ARGV do want[ARGV[i]] = true end
end
local limit = tonumber(ARGV[3])
local out, offset = {}, 0
while #out < limit do
  local chunk = limit - #out
  if want then chunk = 500 end
  local r = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES',
                       'LIMIT', offset, chunk)
  if #r == 0 then break end
  offset = offset + #r / 2
  for i = 1, #r, 2 do
    local m = r[i]
    local sep = string.find(m, ' ', 1, true)
    if (not want) or want[string.sub(m, sep + 1)] then
      local pos = string.sub(m, 1, sep - 1)
      local e = redis.call('XRANGE', KEYS[1], pos, pos)
      if #e > 0 then out[#out + 1] = {r[i + 1], body_of(e[1][2])}
      else out[#out + 1] = {r[i + 1], {pos}} end
      if #out >= limit then break end
    end
  end
  if #r / 2 < chunk then break end
end
return out
"""
