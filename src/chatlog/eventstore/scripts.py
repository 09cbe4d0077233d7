"""The append scripts' entry points and the other server-side scripts.

The append function itself lives in ``append.lua``; each entry point here is
appended to it to make one script.
"""

from __future__ import annotations

#: Entry point of one append. KEYS[1] stream, KEYS[2] versions hash, KEYS[3]
#: aggregate index, KEYS[3+i] event i's id key (read only when it is flagged).
#: ARGV[1] aggregate, ARGV[2] expected version (-1: any), ARGV[3] idempotency
#: window in ms, ARGV[4] n events, then 4 per event: id, flagged, type, body.
APPEND_ONE = """
return append(KEYS[1], KEYS[2], ARGV[3], KEYS[3], ARGV[1], tonumber(ARGV[2]),
  tonumber(ARGV[4]), 5, 4)
"""

#: Entry point of a group commit to one partition. KEYS[1] stream, KEYS[2]
#: versions hash, then per append its index key and its events' id keys.
#: ARGV[1] idempotency window in ms, ARGV[2] number of appends, then per
#: append: aggregate, expected version, n events, then 4 per event.
#: Returns per append: its status, the count c of values that follow, those
#: values; an error in one append (a WRONGTYPE key, say) is its own 'err'
#: and does not touch the others.
APPEND_MANY = """
local out = {}
local k, a = 3, 3
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a + 2])
  local ok, res = pcall(append, KEYS[1], KEYS[2], ARGV[1], KEYS[k], ARGV[a],
    tonumber(ARGV[a + 1]), n, a + 3, k + 1)
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
"""

TRIM = """
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last == 0 then return {0, redis.call('GET', KEYS[2]) or ''} end
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('SET', KEYS[2], last[1][1])
return {n, last[1][1]}
"""

READ_AGGREGATE = """
local ids = redis.call('LRANGE', KEYS[2], ARGV[1], ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] then out[#out + 1] = e[1] else out[#out + 1] = {id} end
end
return out
"""

