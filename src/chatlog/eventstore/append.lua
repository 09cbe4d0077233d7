-- Atomic append of a batch of events to one aggregate: the functions both
-- append scripts share. chatlog.eventstore.store appends one of two entry
-- points to it: APPEND_ONE (one aggregate's batch) or APPEND_MANY (a group
-- commit: several independent appends to one partition in one call).
--
-- Remembered event ids (chatlog.eventstore.idempotency): a record per event id
-- in a hash bucket <tag>:ids:<window ms>:<generation>:<bucket>, where the
-- generation is the server's time divided by the window and the bucket is the
-- record's 16-bit hash modulo the bucket count. The field is the id's identity
-- (the event id's 16 bytes and its project's number in the partition), the
-- value "<pos> <version> <digest>". A bucket expires a window after its
-- generation ends, so a record lives for at least the window; a lookup reads
-- the generation now and the one before. The position's milliseconds are kept
-- as an offset from the start of the record's generation (7-9 digits, not 13).

-- ids(spec, stream): the per-call state of the id records, from spec =
-- "<client window ms> <outcome window ms> <buckets> <legacy 0|1>" (legacy:
-- also read the key per id of the format before buckets, <tag>:eid:<project>:<id>).
-- What most calls do not need is made on first use: a first try of a
-- server-made id writes in st.o's `cur` and looks nothing up, so it reads the
-- server's time (TIME) and builds one family (st.i, st.o) and one key name,
-- once it remembers its first record; each number turned into text is a
-- sprintf, and ids() runs once per script call.
local family_names = {__index = function(fam, name)
  local v
  if name == 'prev' then
    v = fam.base .. (fam.gen - 1) .. ':'
  elseif name == 'filters' then
    v = {fam.w .. ':' .. fam.gen, fam.w .. ':' .. (fam.gen - 1)}
  else
    return nil
  end
  rawset(fam, name, v)
  return v
end}

local function family(st, w)
  local now = st.now
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    st.now = now
  end
  local ms = tonumber(w)
  local gen = math.floor(now / ms)
  local base = st.tag .. 'ids:' .. w .. ':'
  return setmetatable({cur = base .. gen .. ':', expire = (gen + 2) * ms, base = base,
                       start = gen * ms, ms = ms, gen = gen, w = w, offsets = {}},
                      family_names)
end

-- st.i: the family (window) of client ids, st.o: of server-made ids (the same
-- table when the windows are equal: compare st.iw and st.ow, not them).
local state_names = {__index = function(st, name)
  local v
  if name == 'i' then
    v = family(st, st.iw)
  elseif name == 'o' then
    v = st.iw == st.ow and st.i or family(st, st.ow)
  else
    return nil
  end
  rawset(st, name, v)
  return v
end}

local function ids(spec, stream)
  local iw, ow, buckets, legacy = string.match(spec, '^(%d+) (%d+) (%d+) (%d)$')
  local tag = string.sub(stream, 1, -4)
  return setmetatable({iw = iw, ow = ow, buckets = tonumber(buckets),
                       legacy = legacy == '1', tag = tag, numbers = tag .. 'idp', pnums = {},
                       dated = {}}, state_names)
end

-- The filters' fields in <tag>:idp (see in_filter), made on first use.
local function filter_fields(st)
  local fields = st.fields
  if not fields then
    fields = {}
    for _, fam in ipairs(st.iw == st.ow and {st.i} or {st.i, st.o}) do
      for _, name in ipairs(fam.filters) do fields[#fields + 1] = 'idf:' .. name end
    end
    st.fields = fields
  end
  return fields
end

-- The number of `project` (its text) in the partition, which the records'
-- fields carry instead of the project's 16 bytes: assigned at its first record
-- when `assign` (never reused), false when it has none. `lookups` false: no id
-- will be looked up (the filters are not read with it).
local function project_number(st, project, assign, lookups)
  local n = st.pnums[project]
  if n == nil and st.filters == nil and lookups ~= false then  -- with the archived ids'
    local fields = filter_fields(st)                            -- filters (in_filter)
    local got = redis.call('HMGET', st.numbers, project, unpack(fields))
    n = got[1]
    st.filters = {}
    for j, field in ipairs(fields) do st.filters[string.sub(field, 5)] = got[j + 1] end
    st.pnums[project] = n or false
  end
  if n == nil or (not n and assign) then
    n = redis.call('HGET', st.numbers, project)
    if not n and assign then
      n = tostring(redis.call('HINCRBY', st.numbers, '', 1))
      redis.call('HSET', st.numbers, project, n)
    end
    st.pnums[project] = n or false
  end
  return n
end

-- Where the record of event `rec` (mode, 2-byte hash, 8-byte digest, the event
-- id's 16 bytes, 10-byte filter hash; see chatlog.eventstore.idempotency) of a
-- project numbered `number` lives: its bucket key in the current generation of
-- its window, its field, its family (window) and the bucket suffix. Modes: 'i' a
-- client's id; 'o' the server's, first try (nothing to look up); 'r' the
-- server's, sent again; 'I', 'R': 'i', 'r' that the archive does not hold.
local function slot_of(st, rec, number)
  local mode, h1, h2 = string.byte(rec, 1, 3)
  local fam = (mode == 105 or mode == 73) and st.i or st.o
  local suffix = tostring((h1 * 256 + h2) % st.buckets)
  return fam.cur .. suffix, string.sub(rec, 12, 27) .. number, fam, suffix, mode
end

-- A remembered record's position, version and digest ('' when it has none),
-- from its value and the start of its generation (nil: a key of the format
-- before buckets, whose position is whole).
local function parse(value, start)
  local a = string.find(value, ' ', 1, true)
  local b = string.find(value, ' ', a + 1, true)
  local pos = string.sub(value, 1, a - 1)
  if start then
    local offset, seq = string.match(pos, '^(%d+)%-(%d+)$')
    pos = string.format('%.0f', start + tonumber(offset)) .. '-' .. seq
  end
  return pos, string.sub(value, a + 1, (b or 0) - 1), b and string.sub(value, b + 1) or ''
end

-- Does a remembered digest name other content than `digest` (8 bytes)? A
-- record of the format before buckets keeps 24 hex digits (of which the
-- first 16 are these 8 bytes); a record without one matches anything.
local function other_content(known, digest)
  if known == '' then return false end
  if #known == 24 then
    local hex = string.gsub(digest, '.', function(c) return string.format('%02x', string.byte(c)) end)
    return string.sub(known, 1, 16) ~= hex
  end
  return known ~= digest
end

-- The record of event `rec` of a project numbered `number` (false: none yet):
-- its value or false, the key it was found in and the start of that key's
-- generation (nil for a key of the format before buckets). Also notes in st.dated
-- whether its bucket in the current generation exists with its expiry set
-- (its field '' is set with the expiry), so that remember sets it only once.
local function recall(st, rec, number, event_id, legacy)
  local found, key, start = false, nil, nil
  if number then
    local cur, field, fam, suffix, mode = slot_of(st, rec, number)
    key, start = cur, fam.start
    local got = redis.call('HMGET', key, field, '')
    found = got[1]
    if got[2] then st.dated[cur] = true end
    if not found then
      key, start = fam.prev .. suffix, fam.start - fam.ms
      found = redis.call('HGET', key, field)
    end
    if not found and (mode == 105 or mode == 73) and st.iw ~= st.ow then
      -- a server-made id that a client sends again (after an unanswered append)
      key, start = st.o.cur .. suffix, st.o.start
      found = redis.call('HGET', key, field)
      if not found then
        key, start = st.o.prev .. suffix, st.o.start - st.o.ms
        found = redis.call('HGET', key, field)
      end
    end
  end
  if not found and legacy then
    key, start = legacy .. event_id, nil
    found = redis.call('GET', key)
  end
  return found, key, start
end

-- Remember position `pos`, version and digest ('': none) as the record of event
-- `rec` of a project numbered `number`. A bucket expires a window after its
-- generation ends: its creator sets that, with the field '' that tells later
-- writers it is set.
local function remember(st, rec, number, pos, version, digest)
  local key, field, fam = slot_of(st, rec, number)
  local dash = string.find(pos, '-', 1, true)
  local ms = string.sub(pos, 1, dash - 1)
  local offset = fam.offsets[ms]  -- the events of a call share a few milliseconds
  if not offset then
    offset = string.format('%.0f', tonumber(ms) - fam.start)
    fam.offsets[ms] = offset
  end
  local value = offset .. string.sub(pos, dash) .. ' ' .. version .. ' ' .. digest
  if st.dated[key] then
    redis.call('HSET', key, field, value)
  else  -- the first record of a bucket adds '' too (a new id: 2 new fields)
    if redis.call('HSET', key, field, value, '', '') == 2 then
      redis.call('PEXPIREAT', key, fam.expire)
    end
    st.dated[key] = true
  end
end

-- Ids the archiver sealed out of the buckets (chatlog.eventstore.archived_ids)
-- are kept by the archive; Redis keeps a filter of them: the field
-- 'idf:<window ms>:<generation>' of <tag>:idp (read with the project's number,
-- no command of its own) = '<blocks>,<blocks>...|<fill>' lists the
-- pieces <tag>:idf:<window ms>:<generation>:<k> (k from 1), each <blocks>
-- blocks of 8 bytes. An id sets 6 bits of one block of the piece it
-- was added to: the block its filter hash's first 4 bytes choose, the bits its
-- next 6 bytes do (each mod 64). May the archive hold the id of `rec`, for the
-- family `fam`'s two generations?
local function in_filter(st, rec, fam)
  if st.filters == nil then
    local fields = filter_fields(st)
    local got = redis.call('HMGET', st.numbers, unpack(fields))
    st.filters = {}
    for j, field in ipairs(fields) do st.filters[string.sub(field, 5)] = got[j] end
  end
  local b1, b2, b3, b4 = string.byte(rec, 28, 31)
  local h = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  for _, name in ipairs(fam.filters) do
    local dir = st.filters[name]
    if dir then
      local k = 0
      for blocks in string.gmatch(string.match(dir, '^[^|]*'), '%d+') do
        k = k + 1
        local at = (h % tonumber(blocks)) * 8
        local block = redis.call('GETRANGE', st.tag .. 'idf:' .. name .. ':' .. k, at, at + 7)
        local all = #block == 8
        for j = 32, 37 do
          if not all then break end
          local p = string.byte(rec, j) % 64
          local byte = string.byte(block, math.floor(p / 8) + 1)
          all = math.floor(byte / 2 ^ (7 - p % 8)) % 2 == 1
        end
        if all then return true end
      end
    end
  end
  return false
end

-- The record of event `rec` ('o': none to look for; longer than 37 bytes: the
-- record the archive holds follows): its value (false: none) and the start of
-- its generation (nil: a whole position); and true when it is in no bucket but
-- the archive may hold it (the caller asks the archive).
local function lookup(st, rec, number, event_id, legacy)
  local mode = string.byte(rec, 1)
  if mode == 111 then return false end
  if #rec > 37 then return string.sub(rec, 38), nil end
  local found, _, start = recall(st, rec, number, event_id, legacy)
  if found then return found, start end
  if mode == 105 then
    return false, nil, in_filter(st, rec, st.i) or (st.iw ~= st.ow and in_filter(st, rec, st.o))
  elseif mode == 114 then
    return false, nil, in_filter(st, rec, st.o)
  end
  return false
end

-- append(st, stream, versions, index, aggregate, expected, n, ev0): the
-- partition's stream and versions hash, the aggregate's index list and key,
-- the expected version (-1: any), n events whose 4 arguments each (id, rec:
-- how to deduplicate it, or '' for not at all; type, body) start at ARGV[ev0].
-- Writes the events and their id records; the rest is gathered in st.acc
-- (see deferred).
--
-- Returns {'ok', pos1, ver1, ...} | {'dup', pos1, ver1, ...} |
--         {'conflict', current} | {'partial', i} | {'reused', i} |
--         {'archived?', i, j...}: nothing written; the archive may hold the ids
--         of events i, j...: ask it, then append again saying what it holds.
local function append(st, stream, versions, index, aggregate, expected, n, ev0)
  local seen, nseen, remembered, ask = {}, 0, false, {'archived?'}
  local project = string.match(aggregate, '^[^/]*')
  local number = nil  -- read when an id is first looked up (a first try 'o' looks up none)
  local legacy = st.legacy and (st.tag .. 'eid:' .. project .. ':')
  for i = 1, n do
    local base = ev0 + (i - 1) * 4
    local rec = ARGV[base + 1]
    if rec ~= '' then
      remembered = true
      if number == nil and string.byte(rec, 1) ~= 111 then
        number = project_number(st, project, false)
      end
      local prior, start, maybe = lookup(st, rec, number, ARGV[base], legacy)
      if maybe then ask[#ask + 1] = i end
      if prior then
        local pos, version, known = parse(prior, start)
        if other_content(known, string.sub(rec, 4, 11)) then
          if #ask > 1 then return ask end  -- an earlier one may be reused too
          return {'reused', i}
        end
        nseen = nseen + 1
        seen[i] = {pos, version}
      end
    end
  end
  if #ask > 1 then return ask end
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
  local acc = st.acc
  local current = acc.versions[aggregate]
  if not current then
    current = tonumber(redis.call('HGET', versions, aggregate) or '0')
    acc.versions[aggregate] = current
  end
  if expected >= 0 and current ~= expected then
    return {'conflict', tostring(current)}
  end
  if remembered and not number then number = project_number(st, project, true, false) end
  if not acc.bumped[aggregate] then
    acc.bumped[aggregate] = true
    acc.vorder[#acc.vorder + 1] = aggregate
  end
  local out = {'ok'}
  local list = acc.lists[index]
  if not list then
    list = {}
    acc.lists[index] = list
    acc.lorder[#acc.lorder + 1] = index
  end
  -- the project's replay index (Keys.project_index): <tag>:pidx:<project>
  local pidx = st.tag .. 'pidx:' .. project
  for i = 1, n do
    local base = ev0 + (i - 1) * 4
    local version = tostring(current + i)
    local pos = redis.call('XADD', stream, '*',
      'i', ARGV[base], 't', ARGV[base + 2], 'a', aggregate, 'v', version, 'b', ARGV[base + 3])
    -- counted and indexed at once: an error below leaves the events written so far so
    list[#list + 1] = pos
    acc.versions[aggregate] = current + i
    redis.call('XADD', pidx, pos, 'e', '')
    local rec = ARGV[base + 1]
    if rec ~= '' then
      remember(st, rec, number, pos, version, string.sub(rec, 4, 11))
    end
    out[#out + 1] = pos
    out[#out + 1] = version
  end
  return out
end

-- The writes of one call that need not be made per event, gathered by append in
-- st.acc = deferred() (the entry point sets it) and made once at the end by
-- flush: the aggregates' new versions (one HSET) and each aggregate index's new
-- positions (one RPUSH per aggregate). Redis runs a script alone, so nobody sees
-- them wait.
local function deferred()
  return {versions = {}, bumped = {}, vorder = {}, lists = {}, lorder = {}}
end

local function push_all(cmd, key, values)
  if #values <= 1000 then return redis.call(cmd, key, unpack(values)) end
  for i = 1, #values, 1000 do
    redis.call(cmd, key, unpack(values, i, math.min(i + 999, #values)))
  end
end

-- Make the writes `acc` gathered (`versions`: the partition's versions hash).
-- Returns nil, or the index keys whose RPUSH failed (a key of another type), each
-- with its error, so that the appends to them can say so.
local function flush(acc, versions)
  local vorder = acc.vorder
  if #vorder == 1 then
    redis.call('HSET', versions, vorder[1], tostring(acc.versions[vorder[1]]))
  elseif #vorder > 1 then
    local set = {}
    for i, aggregate in ipairs(vorder) do
      set[2 * i - 1] = aggregate
      set[2 * i] = tostring(acc.versions[aggregate])
    end
    push_all('HSET', versions, set)
  end
  local failed = nil
  for _, key in ipairs(acc.lorder) do
    local ok, err = pcall(push_all, 'RPUSH', key, acc.lists[key])
    if not ok then
      failed = failed or {}
      failed[key] = type(err) == 'table' and (err.err or '?') or tostring(err)
    end
  end
  return failed
end
