"""The append scripts' entry points and the other server-side scripts.

The append function itself lives in ``append.lua``; each entry point here is
appended to it to make one script.
"""

from __future__ import annotations

#: Entry point of one append. KEYS[1] stream, KEYS[2] versions hash, KEYS[3]
#: aggregate index. ARGV[1] aggregate, ARGV[2] expected version (-1: any),
#: ARGV[3] the id records' spec (:func:`chatlog.eventstore.idempotency.spec`),
#: ARGV[4] n events, then 4 per event: id, record (how it is deduplicated), type, body.
APPEND_ONE = """
local st = ids(ARGV[3], KEYS[1])
local acc = deferred()
st.acc = acc
local ok, res = pcall(append, st, KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]),
  tonumber(ARGV[4]), 5)
-- what it wrote before an error is indexed and counted all the same
local failed = flush(acc, KEYS[2])
if not ok then
  return redis.error_reply(type(res) == 'table' and (res.err or '?') or tostring(res))
end
if failed then return redis.error_reply(failed[KEYS[3]]) end
return res
"""

#: Entry point of a group commit to one partition. KEYS[1] stream, KEYS[2]
#: versions hash, then per append its index key. ARGV[1] the id records'
#: spec, ARGV[2] number of appends, then per append: aggregate, expected
#: version, n events, then 4 per event.
#: Returns per append: its status, the count c of values that follow, those
#: values; an error in one append (a WRONGTYPE key, say) is its own 'err'
#: and does not touch the others.
APPEND_MANY = """
local st = ids(ARGV[1], KEYS[1])
local acc = deferred()
st.acc = acc
local results = {}
local a = 3
for k = 3, 2 + tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a + 2])
  local ok, res = pcall(append, st, KEYS[1], KEYS[2], KEYS[k], ARGV[a],
    tonumber(ARGV[a + 1]), n, a + 3)
  if not ok then
    res = {'err', type(res) == 'table' and (res.err or '?') or tostring(res)}
  end
  results[k] = res
  a = a + 3 + 4 * n
end
local failed = flush(acc, KEYS[2])
local out = {}
for k = 3, 2 + tonumber(ARGV[2]) do
  local res = results[k]
  if failed and failed[KEYS[k]] and res[1] == 'ok' then res = {'err', failed[KEYS[k]]} end
  out[#out + 1] = res[1]
  out[#out + 1] = #res - 1
  for i = 2, #res do out[#out + 1] = res[i] end
end
return out
"""

#: What the log remembers of event ids (for ``migrate``, and to look at). KEYS[1]
#: the partition's stream. ARGV[1] the id records' spec, then per event: its project
#: (text), id (text) and record. Returns per event: the record's value ("<position>
#: <version> <digest>", '' when not remembered), the milliseconds it is still
#: remembered for (-2: not remembered) and its kind: 'i' (a client's id), 'o' (the
#: server's) or 'l' (a key of the old layout).
FIND_IDS = """
local st = ids(ARGV[1], KEYS[1])
local out = {}
for j = 2, #ARGV, 3 do
  local legacy = st.legacy and (st.tag .. 'eid:' .. ARGV[j] .. ':')
  local found, key, start = recall(st, ARGV[j + 2], project_number(st, ARGV[j], false),
    ARGV[j + 1], legacy)
  local kind = 'i'
  if not found then
    kind = ''
  elseif string.sub(key, 1, #st.o.base) == st.o.base and st.o ~= st.i then
    kind = 'o'
  elseif legacy and key == legacy .. ARGV[j + 1] then
    kind = 'l'
  end
  if found then
    local pos, version, digest = parse(found, start)
    found = pos .. ' ' .. version .. ' ' .. digest
  end
  out[#out + 1] = found or ''
  out[#out + 1] = found and redis.call('PTTL', key) or -2
  out[#out + 1] = kind
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

