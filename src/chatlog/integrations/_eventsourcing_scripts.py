"""The eventsourcing recorders' insert script (one atomic step per write).

Reads are plain commands (see ``Datastore.bodies``)."""

from __future__ import annotations

from chatlog.integrations._runtime import LUA_ADD_ENTRY


def notifications_key(base: str) -> str:
    """The application's notification list: element ``k - 1`` is notification ``k``.

    Notification ids are contiguous from 1 and assigned in the same atomic step
    that pushes the elements, so the list is their index (``LRANGE`` by id, no
    scores); each element (:func:`note`) carries what a ``Notification`` needs
    besides its state, which stays in the log entry's body only."""
    return f"{base}:nl"


def note(position: str | bytes, topic: str, version: int | str, originator_id: str) -> bytes:
    """One element of the notification list: ``position NUL topic NUL version NUL
    originator id`` (a topic has no NUL; the originator id, last, may). Written
    alike by the insert script, the MULTI/EXEC path and ``Datastore.reindex``."""
    pos = position.encode() if isinstance(position, str) else position
    return b"%s\0%s\0%s\0%s" % (pos, topic.encode(), str(version).encode(),
                                   originator_id.encode())


def lacking_key(notifications: str) -> str:
    """Set while the list ``notifications`` holds placeholders (b"") for ids the
    sequence gave before the list existed: how many it held then. ``reindex`` fills
    them and deletes it."""
    return f"{notifications}:lacking"


# KEYS: sequence, notifications, lacking_key(notifications)
# -> {ids given, what the list held before this padding (or when it was first padded)}
# Pads the list with b"" up to the ids given, in one atomic step (inserts push after),
# so that element k - 1 stays notification k for the ids given from now on.
_PAD = """
local given = tonumber(redis.call('GET', KEYS[1]) or '0')
local have = redis.call('LLEN', KEYS[2])
if have < given then
  local blanks = {}
  for i = 1, math.min(given - have, 1000) do blanks[i] = '' end
  for at = have, given - 1, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(blanks, 1, math.min(1000, given - at)))
  end
  redis.call('SET', KEYS[3], have, 'NX')
end
local lacking = redis.call('GET', KEYS[3])
return {given, lacking and tonumber(lacking) or have}
"""

# KEYS: sequence, notifications, lacking_key(notifications), the rebuilt list (its
# first ARGV[1] elements: notifications 1..ARGV[1] as the log holds them)
# Puts the rebuilt list in place in one atomic step, keeping what inserts pushed
# meanwhile (the elements from ARGV[1] on), then pads it up to the ids given.
_SWAP = """
local m = tonumber(ARGV[1])
local tail = redis.call('LRANGE', KEYS[2], m, -1)
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
for i = 1, #tail, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(tail, i, math.min(i + 999, #tail)))
end
local given = tonumber(redis.call('GET', KEYS[1]) or '0')
local have = redis.call('LLEN', KEYS[2])
for at = have, given - 1, 1000 do
  local blanks = {}
  for i = 1, math.min(1000, given - at) do blanks[i] = '' end
  redis.call('RPUSH', KEYS[2], unpack(blanks))
end
redis.call('DEL', KEYS[3])
return redis.call('LLEN', KEYS[2])
"""

# KEYS: log, versions, sequence, notifications, tracking
# ARGV: base, application ('1'/'0'), then the tracking record (upstream ('' = none), id,
# event id, type, aggregate, body, index), n, the events' type, aggregate prefix, index key
# prefix, then per event 8 values: event id, originator id, originator digest, originator
# version, topic, JSON head, JSON tail, blob.
# -> {'ok', position, notification id (0: none)..., [tracking position, 0]} (the shape
# chatlog.eventstore.scripted acknowledges) | {'conflict', i} | {'tracking', current}
#
# The work is done per originator, not per event, where it can be: one conflict check
# (ZRANGEBYSCORE over the batch's versions), one HINCRBY, RPUSH and ZADD; one INCRBY
# for the notification ids and one RPUSH of them to the application's notification
# list (see NOTE_FORMAT in eventsourcing.py). Only the XADDs are one per event.
_INSERT = LUA_ADD_ENTRY + """
local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256)
end
local function call_chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local base, app, n = ARGV[1], ARGV[2] == '1', tonumber(ARGV[10])
local rtype, aggp, idxp, S = ARGV[11], ARGV[12], ARGV[13], 14
local groups, order = {}, {}
for i = 0, n - 1 do
  local b = S + i * 8
  local d, v = ARGV[b + 2], tonumber(ARGV[b + 3])
  local g = groups[d]
  if not g then
    g = {agg = aggp .. ARGV[b + 1], vs = {}, lo = v, hi = v, count = 0, pos = {}, z = {}}
    groups[d] = g
    order[#order + 1] = d
  end
  if g.vs[v] then return {'conflict', i} end
  g.vs[v] = i
  g.count = g.count + 1
  if v < g.lo then g.lo = v end
  if v > g.hi then g.hi = v end
end
for _, d in ipairs(order) do
  local g = groups[d]
  local hits = redis.call('ZRANGEBYSCORE', base .. ':o:' .. d, g.lo, g.hi, 'WITHSCORES')
  for j = 2, #hits, 2 do
    local i = g.vs[tonumber(hits[j])]
    if i then return {'conflict', i} end
  end
end
if ARGV[3] ~= '' then
  local current = redis.call('HGET', KEYS[5], ARGV[3])
  if current and tonumber(current) >= tonumber(ARGV[4]) then return {'tracking', current} end
end
for _, d in ipairs(order) do
  local g = groups[d]
  g.v = redis.call('HINCRBY', KEYS[2], g.agg, g.count) - g.count
end
local nid0 = 0
if app and n > 0 then nid0 = redis.call('INCRBY', KEYS[3], n) - n end
local out, notes = {'ok'}, {}
for i = 0, n - 1 do
  local b = S + i * 8
  local g = groups[ARGV[b + 2]]
  local doc, nid = ARGV[b + 5], 0
  if app then
    nid = nid0 + i + 1
    doc = doc .. tostring(nid) .. ARGV[b + 6]
  end
  g.v = g.v + 1
  local pos = redis.call('XADD', KEYS[1], '*', 'i', ARGV[b], 't', rtype, 'a', g.agg,
                         'v', tostring(g.v), 'b', '\0' .. be32(#doc) .. doc .. ARGV[b + 7])
  redis.call('XADD', string.sub(KEYS[1], 1, -4) .. 'pidx:' .. string.match(g.agg, '^[^/]*'),
             pos, 'e', '')
  g.pos[#g.pos + 1] = pos
  g.z[#g.z + 1] = ARGV[b + 3]
  g.z[#g.z + 1] = pos
  if app then
    notes[#notes + 1] = pos .. '\0' .. ARGV[b + 4] .. '\0' .. ARGV[b + 3] .. '\0' .. ARGV[b + 1]
  end
  out[#out + 1] = pos
  out[#out + 1] = nid
end
for _, d in ipairs(order) do
  local g = groups[d]
  call_chunked('RPUSH', idxp .. g.agg, g.pos)
  local z, k = {}, #g.z  -- last event first: a batch's versions usually ascend (see
  -- _eventsourcing_multi._descending)
  for j = k - 1, 1, -2 do
    z[k - j] = g.z[j]
    z[k - j + 1] = g.z[j + 1]
  end
  call_chunked('ZADD', base .. ':o:' .. d, z)
end
if #notes > 0 then call_chunked('RPUSH', KEYS[4], notes) end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
  out[#out + 1] = add_entry(KEYS[1], KEYS[2], ARGV[9], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  out[#out + 1] = 0
end
return out
"""

# The stream's last generated id ('0-0' when there is none): where an XADD * would
# go next. Both scripts below start with it.
_LAST_GENERATED = """
local function last_generated(key)
  if redis.call('EXISTS', key) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end
"""

# What a batch written as one MULTI/EXEC (chatlog.integrations._eventsourcing_multi) must
# know first, read under WATCH of every key it reads; it writes nothing.
# KEYS: log, versions, sequence, tracking, then the originators' keys
# ARGV: upstream ('' = none), the tracking record's aggregate, then per originator:
# aggregate, lowest and highest version of the batch.
# -> {seconds, microseconds, the log's last generated id, sequence, tracked ('' = none),
#     the tracking aggregate's version, {version per originator},
#     {{versions recorded in [lowest, highest]} per originator}}
_CHECK = _LAST_GENERATED + """
local t = redis.call('TIME')
local last = last_generated(KEYS[1])
local tracked, tversion = '', '0'
if ARGV[1] ~= '' then
  tracked = redis.call('HGET', KEYS[4], ARGV[1]) or ''
  tversion = redis.call('HGET', KEYS[2], ARGV[2]) or '0'
end
local versions, hits = {}, {}
for g = 5, #KEYS do
  local b = 3 + (g - 5) * 3
  versions[#versions + 1] = redis.call('HGET', KEYS[2], ARGV[b]) or '0'
  local rows = redis.call('ZRANGEBYSCORE', KEYS[g], ARGV[b + 1], ARGV[b + 2], 'WITHSCORES')
  local scores = {}
  for j = 2, #rows, 2 do scores[#scores + 1] = rows[j] end
  hits[#hits + 1] = scores
end
return {t[1], t[2], last, redis.call('GET', KEYS[3]) or '0', tracked, tversion, versions, hits}
"""

# The guard of a batch sent in one round trip with what the recorder's previous batch
# left (chatlog.integrations._eventsourcing_multi): WATCH, this script, MULTI ... EXEC.
# When anything differs from the guess (or the script fails), it writes the guard key,
# which the client watches: the EXEC that follows then does nothing.
# KEYS: log, versions, sequence, tracking, guard, then the originators' keys
# ARGV: the log's last generated id, sequence, the batch's millisecond, upstream ('' =
# none), its notification id, the tracking aggregate and its version, then per
# originator: aggregate, version, lowest and highest version of the batch.
# -> 1 (as guessed) | 0 (refused: the EXEC will do nothing)
_GUARD = _LAST_GENERATED + """
local function guessed()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = last_generated(KEYS[1])
  if last ~= ARGV[1] then return false end
  local ms, last_ms = tonumber(ARGV[3]), tonumber(string.match(last, '^(%d+)'))
  if (ms > now and ms > last_ms) or ms < now - 1000 then return false end
  if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then return false end
  if ARGV[4] ~= '' then
    local tracked = redis.call('HGET', KEYS[4], ARGV[4])
    if tracked and tonumber(tracked) >= tonumber(ARGV[5]) then return false end
    if (redis.call('HGET', KEYS[2], ARGV[6]) or '0') ~= ARGV[7] then return false end
  end
  for g = 6, #KEYS do
    local b = 8 + (g - 6) * 4
    if (redis.call('HGET', KEYS[2], ARGV[b]) or '0') ~= ARGV[b + 1] then return false end
    local hits = redis.call('ZRANGEBYSCORE', KEYS[g], ARGV[b + 2], ARGV[b + 3], 'LIMIT', 0, 1)
    if #hits > 0 then return false end
  end
  return true
end
local ok, result = pcall(guessed)
if ok and result then return 1 end
redis.call('INCR', KEYS[5])
return 0
"""
