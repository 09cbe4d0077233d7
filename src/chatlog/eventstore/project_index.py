"""Project-filtered reads through a per-project index, so that a replay of one project
costs work in proportion to that project's events, not to its partition's.

Every writer of the log (the append script, ``migrate``, the integrations) adds,
in the same script as the event, an entry to the project's index stream
(:meth:`Keys.project_index`) whose id is the event's position. A read takes the
index entries after the cursor and the events at those positions in one script.

Across tiers the index follows the log: the archiver trims the index streams with
the stream (:func:`trim_project_indexes`, before its XTRIM). When a read starts
before the stream's first entry ``L`` and the index begins after the cursor, is
empty, or names positions before ``L``, the project's events between the cursor
and ``L`` may be archived; they are read from the archive through its aggregate
index (:func:`chatlog.eventstore.archive.read_project`), cut at ``L`` (an event a
crash left in both tiers comes from Redis only, as :mod:`.tiers` does).
Erasure deletes the erased positions from the index. A log created before the
index existed has no ``project_index`` flag in its metadata: opening it builds the
index once (:func:`build_project_index`); until then :func:`indexed` says no and
readers scan as before.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chatlog.eventstore._tail import check_horizon
from chatlog.eventstore._watermark import capped
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive


class IndexedStore(Protocol):
    """What these reads need of :class:`chatlog.eventstore.EventStore` (the store calls
    :func:`build_project_index` when it opens a log, so this module does not import it)."""

    redis: Any
    keys: Keys
    partitions: int

    @property
    def archive(self) -> Archive | None: ...

    @property
    def committed_only(self) -> bool: ...


log = logging.getLogger(__name__)

#: A stream entry with its fields as a dict (what ``read_raw`` returns).
RawEntry = tuple[bytes, dict[bytes, bytes]]

#: Lua: ``less(a, b)``, stream positions ``ms-seq`` compared as numbers.
_LESS = """
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
"""

#: KEYS[1] stream, KEYS[2] horizon, KEYS[3] committed stream, KEYS[4..] index streams.
#: ARGV[1] after (``0-0``: from the first), ARGV[2] count n, ARGV[3] '1': read the
#: committed position. Walks each index after ``after`` until it has n positions:
#: those at or past the stream's first entry ``L`` with the entry there (one whose
#: entry left the stream, by erasure, is passed over), those before ``L`` only
#: counted (archived). Returns ``{horizon, committed, L, flags, entries}``: per index
#: '1' when the project's events between ``after`` and ``L`` may be archived (the
#: walk began at the index's first entry, the index is empty, or it met archived
#: positions), else ''; then the entries found, in position order per index.
READ_PROJECTS = _LESS + """
local after, n = ARGV[1], tonumber(ARGV[2])
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local L = head and head[1] or ''
local behind = L == '' or less(after, L)
local flags, entries = {}, {}
for k = 4, #KEYS do
  local first = redis.call('XRANGE', KEYS[k], '-', '+', 'COUNT', 1)[1]
  local archived = (not first) or (not less(first[1], after) and first[1] ~= after)
  local counted, start = 0, '(' .. after
  if after == '0-0' then start = '-' end
  while counted < n do
    local want = n - counted
    local got = redis.call('XRANGE', KEYS[k], start, '+', 'COUNT', want)
    for _, e in ipairs(got) do
      local pos = e[1]
      if L ~= '' and less(pos, L) then
        archived = true
        counted = counted + 1
      else
        local entry = redis.call('XRANGE', KEYS[1], pos, pos)[1]
        if entry then
          entries[#entries + 1] = entry
          counted = counted + 1
        end
      end
      start = '(' .. pos
    end
    if #got < want then break end
  end
  if behind and archived then flags[#flags + 1] = '1' else flags[#flags + 1] = '' end
end
local committed = ''
if ARGV[3] == '1' then
  local c = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  if c then committed = c[1] end
end
return {redis.call('GET', KEYS[2]) or '', committed, L, flags, entries}
"""

#: KEYS[1] stream, KEYS[2..] index streams; ARGV[1] end (``+`` or ``(pos``), ARGV[2]
#: count n. Walks each index backwards from ``end`` until it has n entries or meets
#: a position before the stream's first entry ``L`` (archived). Returns ``{L, flags,
#: entries}``: per index '1' when the walk ended short (the project's older events
#: may be archived), else ''; then the entries found, newest first per index.
READ_PROJECTS_BEFORE = _LESS + """
local n = tonumber(ARGV[2])
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local L = head and head[1] or ''
local flags, entries = {}, {}
for k = 2, #KEYS do
  local found, done, stop = 0, false, ARGV[1]
  while found < n and not done do
    local want = n - found
    local got = redis.call('XREVRANGE', KEYS[k], stop, '-', 'COUNT', want)
    for _, e in ipairs(got) do
      local pos = e[1]
      if L == '' or less(pos, L) then done = true break end
      local entry = redis.call('XRANGE', KEYS[1], pos, pos)[1]
      if entry then
        entries[#entries + 1] = entry
        found = found + 1
      end
      stop = '(' .. pos
    end
    if #got < want then done = true end
  end
  if found < n then flags[#flags + 1] = '1' else flags[#flags + 1] = '' end
end
return {L, flags, entries}
"""

_indexed: weakref.WeakKeyDictionary[IndexedStore, bool] = weakref.WeakKeyDictionary()
_scripts: weakref.WeakKeyDictionary[IndexedStore, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _script(store: IndexedStore, backwards: bool = False) -> Any:
    scripts = _scripts.get(store)
    if scripts is None:
        scripts = _scripts[store] = (store.redis.register_script(READ_PROJECTS),
                                     store.redis.register_script(READ_PROJECTS_BEFORE))
    return scripts[1 if backwards else 0]


async def indexed(store: IndexedStore) -> bool:
    """Whether the log keeps the per-project index (created with it; remembered once true)."""
    if _indexed.get(store):
        return True
    flag = await guard(store.redis.hget(store.keys.meta, "project_index"))
    _indexed[store] = bool(flag)
    return bool(flag)


def _key(position: bytes | str) -> tuple[int, int]:
    return parse_position(text(position))


def _archived(archive: Archive, partition: int, wanted: list[tuple[str, str | None]],
              after: str, limit: int) -> list[tuple[bytes, list[bytes]]]:
    """The archived events of each ``(project, before)``: after ``after``, before the
    project's first event in Redis; the manifest re-read once when an answer is short
    (a segment may have been published since it was read)."""
    from chatlog.eventstore.archive import read_project

    out: list[tuple[bytes, list[bytes]]] = []
    for project, bound in wanted:
        got = read_project(archive, partition, project, after, bound, limit)
        if len(got) < limit:
            archive.reload()
            got = read_project(archive, partition, project, after, bound, limit)
        out.extend(got)
    return out


async def read_projects(store: IndexedStore, partition: int, projects: Sequence[uuid.UUID],
                        after: str, limit: int) -> list[RawEntry]:
    """Up to ``limit`` events of ``projects`` (all in ``partition``) after ``after``, in
    position order, across both tiers; :class:`PositionTrimmed` when ``after`` lies in
    deleted history. Reads the index entries and events of these projects only."""
    parse_position(after)
    names = sorted({str(p) for p in projects})
    if not names or limit <= 0:
        return []
    keys = store.keys
    reply = await guard(_script(store)(
        keys=[keys.log(partition), keys.horizon(partition), keys.committed(partition),
              *(keys.project_index(partition, name) for name in names)],
        args=[after, limit, "1" if store.committed_only else "0"]))
    horizon, mark, first, flags, rows = reply
    check_horizon(partition, after, horizon or None)
    hot: list[RawEntry] = sorted(
        ((pos, dict(zip(flat[::2], flat[1::2], strict=True))) for pos, flat in rows),
        key=lambda e: _key(e[0]))
    if store.committed_only:
        hot = capped(hot, text(mark) if mark else START)
    bound = text(first) or None
    wanted = [(name, bound) for name, flag in zip(names, flags, strict=True) if flag]
    if wanted and store.archive is not None:
        cold = await asyncio.to_thread(_archived, store.archive, partition, wanted, after,
                                       limit)
        if cold:
            hot.extend((pos, dict(zip(flat[::2], flat[1::2], strict=True)))
                       for pos, flat in cold)
            hot.sort(key=lambda e: _key(e[0]))
    return hot[:limit]


def _archived_before(archive: Archive, partition: int, projects: list[str],
                     before: str | None, limit: int) -> list[tuple[bytes, list[bytes]]]:
    from chatlog.eventstore.archive import read_project_before

    archive.reload()
    out: list[tuple[bytes, list[bytes]]] = []
    for project in projects:
        out.extend(read_project_before(archive, partition, project, before, limit))
    return out


async def read_projects_before(store: IndexedStore, partition: int,
                               projects: Sequence[uuid.UUID], before: str | None,
                               limit: int) -> list[RawEntry]:
    """Up to ``limit`` events of ``projects`` (all in ``partition``) before position
    ``before`` (None: from the newest), newest first, across both tiers (as
    :func:`chatlog.eventstore.backward.read_raw_before`, which reads every project's)."""
    names = sorted({str(p) for p in projects})
    if before is not None:
        parse_position(before)
        if before == START:
            return []
    if not names or limit <= 0:
        return []
    keys = store.keys
    first, flags, rows = await guard(_script(store, backwards=True)(
        keys=[keys.log(partition), *(keys.project_index(partition, name) for name in names)],
        args=["+" if before is None else f"({before}", limit]))
    found: list[RawEntry] = [(pos, dict(zip(flat[::2], flat[1::2], strict=True)))
                             for pos, flat in rows]
    short = [name for name, flag in zip(names, flags, strict=True) if flag]
    if short and store.archive is not None:
        bound = text(first) or None
        if before is not None and (bound is None or _key(before) < _key(bound)):
            bound = before
        cold = await asyncio.to_thread(_archived_before, store.archive, partition, short,
                                       bound, limit)
        found.extend((pos, dict(zip(flat[::2], flat[1::2], strict=True))) for pos, flat in cold)
    found.sort(key=lambda e: _key(e[0]), reverse=True)
    return found[:limit]


async def trim_project_indexes(store: IndexedStore, partition: int, last: str,
                               aggregates: Sequence[bytes | str]) -> None:
    """Drop from the index streams of the projects of ``aggregates`` every position up to
    ``last`` (archived; the archiver calls this before it trims the stream)."""
    projects = sorted({text(a).split("/", 1)[0] for a in aggregates})
    ms, seq = parse_position(last)
    for i in range(0, len(projects), 500):
        pipe = store.redis.pipeline(transaction=False)
        for project in projects[i:i + 500]:
            pipe.xtrim(store.keys.project_index(partition, project), minid=f"{ms}-{seq + 1}",
                       approximate=False)
        await guard(pipe.execute())


#: KEYS[1] stream; ARGV[1] key prefix of the indexes being built, ARGV[2] start
#: (``-`` or ``(pos``), ARGV[3] last position to index, ARGV[4] count. Adds each
#: entry's position to its project's index under construction; returns the last
#: position read and the projects seen.
_BUILD = """
local got = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', tonumber(ARGV[4]))
local seen, projects = {}, {}
for _, e in ipairs(got) do
  local fields, aggregate = e[2], ''
  for i = 1, #fields, 2 do
    if fields[i] == 'a' then aggregate = fields[i + 1] end
  end
  local project = string.match(aggregate, '^[^/]*')
  redis.call('XADD', ARGV[1] .. project, e[1], 'e', '')
  if not seen[project] then seen[project] = true projects[#projects + 1] = project end
end
local last = ''
if #got > 0 then last = got[#got][1] end
return {last, projects}
"""

#: KEYS[1] the index built, KEYS[2] the live index. Adds the live entries past the
#: built ones (appends made meanwhile), then puts the result in place.
_SWAP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
for _, e in ipairs(redis.call('XRANGE', KEYS[2], '(' .. last, '+')) do
  redis.call('XADD', KEYS[1], e[1], 'e', '')
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""


async def build_project_index(store: IndexedStore, chunk: int = 5_000) -> bool:
    """Give a log created before the per-project index its index, then flag it (readers
    scan until then). Appends made meanwhile are kept: they write the live index,
    which is merged in at the end. One process builds it (a lock key); False when
    another holds the lock."""
    redis, keys = store.redis, store.keys
    lock = f"{keys.prefix}:pidx-build-lock"
    log.info("building the per-project replay index of the log %r (once)", keys.prefix)
    if not await guard(redis.set(lock, "1", nx=True, ex=3600)):
        return False
    try:
        build, swap = redis.register_script(_BUILD), redis.register_script(_SWAP)
        for p in range(store.partitions):
            prefix = f"{keys.tag(p)}:pidx-build:"
            stale = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
            if stale:
                await guard(redis.delete(*stale))
            head = await guard(redis.xrevrange(keys.log(p), "+", "-", 1))
            if not head:
                continue
            last, start = text(head[0][0]), "-"
            projects: set[str] = set()
            while True:
                reached, seen = await guard(build(keys=[keys.log(p)],
                                                  args=[prefix, start, last, chunk]))
                projects.update(text(s) for s in seen)
                if not reached or text(reached) == last:
                    break
                start = f"({text(reached)}"
            for project in sorted(projects):
                await guard(swap(keys=[prefix + project, keys.project_index(p, project)]))
        await guard(redis.hset(keys.meta, "project_index", "1"))
        _indexed[store] = True
        log.info("the per-project replay index of the log %r is built", keys.prefix)
        return True
    finally:
        await guard(redis.delete(lock))


async def trim_project_indexes_before(store: IndexedStore, partition: int, before: str) -> None:
    """Drop from every project index of ``partition`` the positions before ``before``
    (a deliberate deletion: those events are gone from both tiers)."""
    parse_position(before)
    pattern = f"{store.keys.tag(partition)}:pidx:*"
    found = [k async for k in store.redis.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(found), 500):
        pipe = store.redis.pipeline(transaction=False)
        for key in found[i:i + 500]:
            pipe.xtrim(key, minid=before, approximate=False)
        await guard(pipe.execute())
