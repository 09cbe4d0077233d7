"""The LangGraph saver's scripts and index keys (beside the log, in the partition's slot)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig

from chatlog.eventstore.codec import flat_field, split_body
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.integrations._runtime import LUA_ADD_ENTRY, digest

#: A graph step names its thread and namespace several times (each key of an aput,
#: aget_tuple's): their digests once.
_short = functools.lru_cache(maxsize=4096)(digest)

# A checkpoint and the writes against it are one aggregate of the log,
# <project>/langgraph/<thread>/<ns>/<checkpoint id>, so deleting checkpoints deletes
# whole aggregates and every aggregate left keeps versions 1, 2, 3...

#: Lua: ``same_body(log, position, body)``, whether the entry at ``position`` is in the
#: stream with exactly this body (a retried write, after "not replicated" say).
LUA_SAME_BODY = """
local function same_body(log, pos, body)
  local e = redis.call('XRANGE', log, pos, pos)
  if #e == 0 then return false end
  local f = e[1][2]
  for k = 1, #f - 1, 2 do
    if f[k] == 'b' then return f[k + 1] == body end
  end
  return false
end
"""

# KEYS: log, versions, index, ns set, cp zset, pos hash, threads set, run set, members set
# ARGV: id, type, aggregate, body, ns, checkpoint id, thread, run member ('' = none)
# -> {'ok', position, version} (the shape chatlog.eventstore.scripted acknowledges) |
#    {'dup', position, version}: the checkpoint is there with this content already (a
#    retry), nothing is added; the same id with other content is stored again (it wins).
PUT = LUA_ADD_ENTRY + LUA_SAME_BODY + """
local prior = redis.call('HGET', KEYS[6], ARGV[6])
if prior and same_body(KEYS[1], prior, ARGV[4]) then
  if ARGV[8] ~= '' then redis.call('SADD', KEYS[8], ARGV[8]) end
  return {'dup', prior, '1'}
end
local pos = add_entry(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[5], 0, ARGV[6])
redis.call('HSET', KEYS[6], ARGV[6], pos)
redis.call('SADD', KEYS[7], ARGV[7])
if ARGV[8] ~= '' then redis.call('SADD', KEYS[8], ARGV[8]) end
redis.call('SADD', KEYS[9], ARGV[5] .. '\0' .. ARGV[6])
return {'ok', pos, '1'}
"""

# KEYS: log, versions, index, writes hash, members set
# ARGV: id, type, aggregate, body, replace ('1' = overwrite), member, then (field, k) pairs.
# Nothing is added when every (task, idx) was written before (and replace is off), or
# when replace is on and they all name one entry with this very content (a retry).
# -> {'ok', position, version} | {'none'} | {'dup', position, version}
WRITES = LUA_ADD_ENTRY + LUA_SAME_BODY + """
if ARGV[5] == '1' then
  local first = redis.call('HGET', KEYS[4], ARGV[7])
  if first then
    local p = string.sub(first, 1, string.find(first, ' ', 1, true) - 1)
    local same = true
    for i = 7, #ARGV, 2 do
      if redis.call('HGET', KEYS[4], ARGV[i]) ~= p .. ' ' .. ARGV[i + 1] then
        same = false
        break
      end
    end
    if same and same_body(KEYS[1], p, ARGV[4]) then return {'dup', p, '1'} end
  end
end
local fresh = {}
for i = 7, #ARGV, 2 do
  if ARGV[5] == '1' or redis.call('HEXISTS', KEYS[4], ARGV[i]) == 0 then
    fresh[#fresh + 1] = i
  end
end
if #fresh == 0 then return {'none'} end
local pos = add_entry(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
for _, i in ipairs(fresh) do
  redis.call('HSET', KEYS[4], ARGV[i], pos .. ' ' .. ARGV[i + 1])
end
redis.call('SADD', KEYS[5], ARGV[6])
return {'ok', pos, '1'}
"""

# KEYS: log, cp zset, pos hash; ARGV: checkpoint id ('' = latest), writes key prefix, ns.
# -> false | {checkpoint id, {position, fields}, {{write position, fields}...}, {{pos, k}...}}
# where fields is false when the entry left the stream (archived, or deleted).
READ = """
local cid = ARGV[1]
if cid == '' then
  local top = redis.call('ZREVRANGEBYLEX', KEYS[2], '+', '-', 'LIMIT', 0, 1)
  if #top == 0 then return false end
  cid = top[1]
end
local pos = redis.call('HGET', KEYS[3], cid)
if not pos then return false end
local e = redis.call('XRANGE', KEYS[1], pos, pos)
local cp = {pos, false}
if #e > 0 then cp[2] = e[1][2] end
local w = redis.call('HGETALL', ARGV[2] .. redis.sha1hex(ARGV[3] .. '\0' .. cid))
local entries, refs, seen = {}, {}, {}
for i = 1, #w, 2 do
  local v = w[i + 1]
  local sep = string.find(v, ' ', 1, true)
  local p = string.sub(v, 1, sep - 1)
  if not seen[p] then
    seen[p] = true
    local we = redis.call('XRANGE', KEYS[1], p, p)
    local fields = false
    if #we > 0 then fields = we[1][2] end
    entries[#entries + 1] = {p, fields}
  end
  refs[#refs + 1] = {p, string.sub(v, sep + 1)}
end
return {cid, cp, entries, refs}
"""

# Forgets checkpoints of one thread in the saver's index keys (reads find them no more);
# their events are erased from every tier by chatlog.erasure, which the caller runs.
# KEYS: ns set, members set, threads set
# ARGV: thread key prefix, thread id, all ('1': every member, then the thread's own
# keys), then (ns, checkpoint id) pairs.
UNINDEX = """
local t = ARGV[1]
local targets = {}
if ARGV[3] == '1' then
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local sep = string.find(m, '\0', 1, true)
    targets[#targets + 1] = {string.sub(m, 1, sep - 1), string.sub(m, sep + 1)}
  end
else
  for i = 4, #ARGV, 2 do targets[#targets + 1] = {ARGV[i], ARGV[i + 1]} end
end
for _, target in ipairs(targets) do
  local ns, cid = target[1], target[2]
  redis.call('DEL', t .. ':w:' .. redis.sha1hex(ns .. '\0' .. cid))
  local h = redis.sha1hex(ns)
  redis.call('HDEL', t .. ':pos:' .. h, cid)
  redis.call('ZREM', t .. ':cp:' .. h, cid)
  redis.call('SREM', KEYS[2], ns .. '\0' .. cid)
end
if ARGV[3] == '1' then
  for _, ns in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local h = redis.sha1hex(ns)
    redis.call('DEL', t .. ':cp:' .. h, t .. ':pos:' .. h)
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return #targets
"""


class Keys:
    """Index key names of one project's checkpoints (all in the partition's slot)."""

    def __init__(self, store: EventStore, project: ProjectKey) -> None:
        self.partition = store.partition_of(project.key)
        keys = store.keys
        self.log = keys.log(self.partition)
        self.versions = keys.versions(self.partition)
        self.base = f"{keys.tag(self.partition)}:lg:{project.key}"
        self.threads = f"{self.base}:threads"
        self._index = keys.aggregate_index

    def thread(self, thread_id: str) -> str:
        return f"{self.base}:t:{_short(thread_id)}"

    def index(self, aggregate: str) -> str:
        return self._index(self.partition, aggregate)

    def ns_set(self, thread_id: str) -> str:
        return f"{self.thread(thread_id)}:ns"

    def cps(self, thread_id: str, ns: str) -> str:
        return f"{self.thread(thread_id)}:cp:{_short(ns)}"

    def positions(self, thread_id: str, ns: str) -> str:
        return f"{self.thread(thread_id)}:pos:{_short(ns)}"

    def writes_prefix(self, thread_id: str) -> str:
        return f"{self.thread(thread_id)}:w:"

    def writes(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return self.writes_prefix(thread_id) + digest(f"{ns}\0{checkpoint_id}")

    def members(self, thread_id: str) -> str:
        """Set: ``<ns>NUL<checkpoint id>`` of every checkpoint aggregate of the thread."""
        return f"{self.thread(thread_id)}:members"

    def run(self, run_id: str) -> str:
        return f"{self.base}:run:{digest(run_id)}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def configurable(config: RunnableConfig) -> dict[str, Any]:
    conf: dict[str, Any] = config.get("configurable") or {}
    return conf


def _part(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def aggregate_id(thread_id: str, ns: str, checkpoint_id: str) -> str:
    """The aggregate of one checkpoint and its writes (its data names the parts).

    A ``/`` (and ``%``) inside a part is escaped, so that ``thread_prefix(t)``
    starts the aggregates of thread ``t`` only (not those of a thread ``t/x``);
    ids without them read as written."""
    return f"{_part(thread_id)}/{_part(ns)}/{_part(checkpoint_id)}"


def thread_prefix(thread_id: str) -> str:
    """What the ids of one thread's checkpoint aggregates start with (and no others')."""
    return f"{_part(thread_id)}/"


def checkpoint_prefix(thread_id: str, ns: str, checkpoint_id: str) -> str:
    """What the id of one checkpoint's aggregate starts with: the id itself; another
    checkpoint's starts with it too only if its id extends this one's (LangGraph's ids
    are fixed-length)."""
    return aggregate_id(thread_id, ns, checkpoint_id)


def body_parts(flat: Sequence[bytes]) -> tuple[dict[str, Any], bytes]:
    doc, blob = split_body(flat_field(flat, b"b"))
    data: dict[str, Any] = orjson.loads(doc)["d"]
    return data, blob or b""
