"""Remembered ids of archived events: out of Redis, kept exactly by the archive.

When the archiver seals a segment, the records of its events' ids
(:mod:`.idempotency`) leave Redis with the events, so that Redis memory does
not grow with the log however long the windows are. Two steps, after the
segment is published and before its events are trimmed from Redis:

``ids-published``
    read the records of the segment's ids from their buckets and write them to
    the segment's id file (:mod:`chatlog.eventstore.archive.idfiles`: temporary
    name, fsync, read back, rename).
``ids-removed``
    per chunk of ids, one script deletes each record from its bucket and, only
    if it was there, adds the id to the partition's filter of archived ids (a
    blocked Bloom filter per window and generation, expiring with its buckets;
    see ``append.lua``). An id is always in a bucket, or in the filter and a
    published id file.

A crash between the steps leaves the records in Redis (and maybe a published
file); the next pass finishes them (the file is written once; deleting a
record already deleted adds nothing to the filter): re-running is idempotent.

An append whose id is in no bucket but in the filter gets ``archived?`` from the
script; :func:`resolve` then looks the ids up in the id files of the segments
that may hold them, and the append is sent again with what the archive holds
(:func:`.idempotency.archived`) or with "not there" (:func:`.idempotency.checked`).
A filter's false positive costs such a lookup, nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chatlog.errors import StoreUnavailable
from chatlog.eventstore.archive import idfiles
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import guard
from chatlog.eventstore.idempotency import BUCKETS, archived, as_retry, checked, record

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive
    from chatlog.eventstore.connection import Client
    from chatlog.eventstore.keys import Keys


class EventStore(Protocol):
    """What the archiver's ids steps use of the store (its windows on its append path)."""

    redis: Client
    keys: Keys
    _appender: Any

#: Ids per script call (each call is atomic: a chunk of ids moves at once).
CHUNK = 2_000
#: Filter bits per id (~1% false positives with 6 bits set per id in 64-bit blocks).
BITS_PER_ID = 10
#: A generation's first filter piece, in 8-byte blocks (64 KiB: ~52k ids); each next
#: piece is twice its predecessor.
FIRST_BLOCKS = 8_192

#: KEYS[1] the partition's stream. ARGV[1] "<window ms> <window ms>", then per id: its
#: project (text), record (:func:`.idempotency.record`) and position's ms. Returns per
#: id: the record's value ('' when none), the window and generation of its bucket.
GATHER = """
local tag = string.sub(KEYS[1], 1, -4)
local windows = {}
for w in string.gmatch(ARGV[1], '%d+') do windows[#windows + 1] = w end
local order = {}  -- (window, generation offset) to try; the last one found first
for _, win in ipairs(windows) do
  for _, d in ipairs({0, -1, 1}) do order[#order + 1] = {win, d} end
end
local numbers, out, first = {}, {}, 1
for j = 2, #ARGV, 3 do
  local project, rec, ms = ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2])
  local number = numbers[project]
  if number == nil then
    number = redis.call('HGET', tag .. 'idp', project) or false
    numbers[project] = number
  end
  local value, w, g = '', '0', 0
  if number then
    local h1, h2 = string.byte(rec, 2, 3)
    local suffix = ':' .. ((h1 * 256 + h2) % BUCKETS)
    local field = string.sub(rec, 12, 27) .. number
    for k = 0, #order - 1 do
      local at = k == 0 and first or (k < first and k or k + 1)
      if at <= #order then
        local win = order[at][1]
        local gen = math.floor(ms / tonumber(win)) + order[at][2]
        local got = redis.call('HGET', tag .. 'ids:' .. win .. ':' .. gen .. suffix, field)
        if got then value, w, g, first = got, win, gen, at break end
      end
    end
  end
  out[#out + 1] = value
  out[#out + 1] = w
  out[#out + 1] = g
end
return out
""".replace("BUCKETS", str(BUCKETS))

#: KEYS[1] the partition's stream. ARGV, per id: project (text), record, window ms and
#: generation of its bucket. Deletes each record; adds each id whose record it deleted to
#: the filter of its window and generation. Returns how many it deleted.
REMOVE = """
local tag = string.sub(KEYS[1], 1, -4)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dirkey = tag .. 'idf'
local dirs, numbers, removed = {}, {}, 0
local function piece_for(name, w, g)
  local d = dirs[name]
  if d == nil then
    d = {blocks = {}, fill = 0}
    local v = redis.call('HGET', dirkey, name)
    if v then
      local list, fill = string.match(v, '^([^|]*)|(%d+)$')
      for b in string.gmatch(list, '%d+') do d.blocks[#d.blocks + 1] = tonumber(b) end
      d.fill = tonumber(fill)
    end
    dirs[name] = d
  end
  local last = d.blocks[#d.blocks]
  if not last or d.fill >= math.floor(last * 64 / BITS) then
    local blocks = last and last * 2 or FIRST
    d.blocks[#d.blocks + 1] = blocks
    d.fill = 0
    local key = tag .. 'idf:' .. name .. ':' .. #d.blocks
    redis.call('SETRANGE', key, blocks * 8 - 1, '\\0')
    redis.call('PEXPIREAT', key, (g + 2) * w)
  end
  d.fill = d.fill + 1
  return tag .. 'idf:' .. name .. ':' .. #d.blocks, d.blocks[#d.blocks]
end
for j = 1, #ARGV, 4 do
  local project, rec, w, g = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  local number = numbers[project]
  if number == nil then
    number = redis.call('HGET', tag .. 'idp', project) or false
    numbers[project] = number
  end
  if number then
    local h1, h2 = string.byte(rec, 2, 3)
    local key = tag .. 'ids:' .. w .. ':' .. g .. ':' .. ((h1 * 256 + h2) % BUCKETS)
    if redis.call('HDEL', key, string.sub(rec, 12, 27) .. number) == 1 then
      removed = removed + 1
      local piece, blocks = piece_for(w .. ':' .. g, tonumber(w), tonumber(g))
      local b1, b2, b3, b4 = string.byte(rec, 28, 31)
      local at = ((((b1 * 256 + b2) * 256 + b3) * 256 + b4) % blocks) * 8
      local block = {string.byte(redis.call('GETRANGE', piece, at, at + 7), 1, 8)}
      for i = 32, 37 do
        local p = string.byte(rec, i) % 64
        local mask = 2 ^ (7 - p % 8)
        local k = math.floor(p / 8) + 1
        if math.floor(block[k] / mask) % 2 == 0 then block[k] = block[k] + mask end
      end
      redis.call('SETRANGE', piece, at, string.char(unpack(block)))
    end
  end
end
for name, d in pairs(dirs) do
  local list = {}
  for _, b in ipairs(d.blocks) do list[#list + 1] = tostring(b) end
  redis.call('HSET', dirkey, name, table.concat(list, ',') .. '|' .. d.fill)
end
for _, name in ipairs(redis.call('HKEYS', dirkey)) do  -- generations past: forgotten
  local w, g = string.match(name, '^(%d+):(-?%d+)$')
  if w and (tonumber(g) + 2) * tonumber(w) <= now then redis.call('HDEL', dirkey, name) end
end
return removed
""".replace("BUCKETS", str(BUCKETS)).replace("BITS", str(BITS_PER_ID)).replace(
    "FIRST", str(FIRST_BLOCKS))

_caches: weakref.WeakKeyDictionary[Any, idfiles.Cache] = weakref.WeakKeyDictionary()


def _cache(archive: Archive) -> idfiles.Cache:
    cache = _caches.get(archive)
    if cache is None:
        cache = _caches[archive] = idfiles.Cache()
    return cache


def _windows(store: EventStore) -> tuple[int, int]:
    appender = store._appender  # the store's own package
    return max(appender.idempotency_window_ms, 1), max(appender.outcome_window_ms, 1)


async def seal_ids(store: EventStore, archive: Archive, partition: int, last: str,
                   step: Callable[[str], None]) -> int:
    """Move the remembered ids of the published segment ending at ``last`` out of Redis
    into its id file (the two steps above); how many records left Redis."""
    storage = archive.storage
    path = idfiles.ids_path(storage, partition, last)
    body = await asyncio.to_thread(_cache(archive).body, storage, path)
    if body is None:
        kept = await _gather(store, archive, partition, last)
        data = idfiles.encode([e for e, _, _ in kept])
        await asyncio.to_thread(idfiles.publish, storage, partition, last, data)
        step("ids-published")
    else:
        kept = []
        for e in idfiles.entries(body):
            project = uuid.UUID(bytes=e.project)
            kept.append((e, str(project), record(project, uuid.UUID(bytes=e.event_id), "",
                                                 True)))
    removed = 0
    script = store.redis.register_script(REMOVE)
    key = store.keys.log(partition)
    batch: list[Any] = []
    for entry, project_text, rec in kept:
        batch += [project_text, rec, entry.window_ms, entry.generation]
        if len(batch) >= 4 * CHUNK:
            removed += int(await guard(script(keys=[key], args=batch)))
            batch = []
    if batch:
        removed += int(await guard(script(keys=[key], args=batch)))
    step("ids-removed")
    return removed


async def _gather(store: EventStore, archive: Archive, partition: int,
                  last: str) -> list[tuple[idfiles.ArchivedId, str, bytes]]:
    """What Redis remembers of the ids of the segment ending at ``last`` (with each
    one's project as text and record)."""
    info = next(s for s in reversed(archive.segments(partition)) if s.last == last)

    def read() -> list[tuple[str, str, int]]:
        import pyarrow.parquet as pq

        table = pq.read_table(archive.storage.open(info.path),
                              columns=["project", "event_id", "position_ms"])
        return list(zip(*(table.column(c).to_pylist() for c in table.column_names),
                        strict=True))

    rows = await asyncio.to_thread(read)
    script = store.redis.register_script(GATHER)
    iw, ow = _windows(store)
    kept: list[tuple[idfiles.ArchivedId, str, bytes]] = []
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i : i + CHUNK]
        args: list[Any] = [f"{iw} {ow}"]
        recs = [record(project, event_id, "", True) for project, event_id, _ in chunk]
        for (project, _, ms), rec in zip(chunk, recs, strict=True):
            args += [project, rec, ms]
        reply = await guard(script(keys=[store.keys.log(partition)], args=args))
        for j, (project, event_id, _) in enumerate(chunk):
            value, window, generation = bytes(reply[3 * j]), int(reply[3 * j + 1]), int(
                reply[3 * j + 2])
            if not value:
                continue  # forgotten already (its window passed), or never remembered
            pos, version, digest = [*value.split(b" ", 2), b""][:3]
            offset, seq = pos.decode().split("-", 1)
            kept.append((idfiles.ArchivedId(
                uuid.UUID(project).bytes, uuid.UUID(event_id).bytes,
                f"{generation * window + int(offset)}-{seq}", int(version),
                digest if len(digest) == 8 else b"", window, generation), project, recs[j]))
    return kept


def remove_orphans(archive: Archive, partition: int) -> int:
    """:meth:`Archive.remove_orphans`, and remove temporary id files and those of segments
    no longer in the archive (the partition's archiver, holding its lease). File I/O:
    call it in a thread."""
    removed = archive.remove_orphans(partition)
    lasts = {s.last for s in archive.segments(partition)}
    return removed + idfiles.remove_orphans(archive.storage, partition, lasts)


def resolve(archive: Archive, partition: int, ids: Sequence[tuple[bytes, bytes]],
            window_ms: int) -> list[idfiles.ArchivedId | None]:
    """What the archive remembers of each ``(project, event id)`` (16 bytes each) of
    ``partition``, still within its window: looked up in the id files of the segments
    sealed within the last two windows (``window_ms``: the longest), newest first.
    File I/O: call it in a thread."""
    archive.reload()  # the filter named an id: its file was published before
    now = int(time.time() * 1000)
    since = now - 2 * window_ms
    cache = _cache(archive)
    found: list[idfiles.ArchivedId | None] = [None] * len(ids)
    todo = set(range(len(ids)))
    for info in reversed(archive.segments(partition)):
        if not todo or parse_position(info.last)[0] < since:
            break
        body = cache.body(archive.storage, idfiles.ids_path(archive.storage, partition,
                                                             info.last))
        if body is None:
            continue
        for i in list(todo):
            got = idfiles.find(body, *ids[i])
            if got is not None:
                todo.discard(i)
                if got.expires_ms > now:
                    found[i] = got
    return found


class ArchivedIdChecks:
    """The append path's side: marks resent appends as retries (a server-made id's first
    try looks nothing up) and answers the script's ``archived?`` from the archive."""

    #: Server-made ids whose append's outcome this process did not learn, kept (up to
    #: this many) so that appending them again looks them up.
    DOUBTED = 100_000

    def __init__(self, archive_of: Callable[[], Archive | None], window_ms: int) -> None:
        self.archive_of = archive_of
        self.window_ms = window_ms
        self._doubted: dict[str, None] = {}

    def retries(self, ids: Sequence[str], args: list[Any]) -> None:
        """Mark the records of ``ids`` (an append's arguments ``args``: 4 per event from
        the fifth) whose outcome was once in doubt as retries."""
        if self._doubted:
            for i, event_id in enumerate(ids):
                if event_id in self._doubted:
                    args[5 + 4 * i] = as_retry(args[5 + 4 * i])

    def doubt(self, ids: Sequence[str], args: list[Any]) -> None:
        """The append of ``ids`` may have been applied: resending it, or appending them
        again later, must look them up."""
        for i, event_id in enumerate(ids):
            args[5 + 4 * i] = as_retry(args[5 + 4 * i])
            self._doubted[event_id] = None
        while len(self._doubted) > self.DOUBTED:
            del self._doubted[next(iter(self._doubted))]

    async def recheck(self, partition: int, project: uuid.UUID, args: list[Any],
                      reply: Sequence[Any]) -> list[Any]:
        """``args`` saying, for each event the reply ``archived?`` names (1-based), what
        the archive remembers of its id (or that it holds none)."""
        archive = self.archive_of()
        if archive is None:
            raise StoreUnavailable(
                "an appended event id may have been archived, but this store has no "
                "archive to look it up in (CHATLOG_ARCHIVE_URL); nothing was written")
        slots = [1 + 4 * int(i) for i in reply[1:]]
        found = await asyncio.to_thread(
            resolve, archive, partition, [(project.bytes, bytes(args[j][11:27])) for j in slots],
            self.window_ms)
        for j, got in zip(slots, found, strict=True):
            args[j] = checked(args[j]) if got is None else archived(
                args[j], got.position, got.version, got.digest)
        return args
