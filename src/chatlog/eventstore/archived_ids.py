"""Remembered ids of archived events: out of Redis, kept exactly by the archive.

When the archiver seals a segment, the records of its events' ids
(:mod:`.idempotency`) leave Redis with the events, so that Redis memory does
not grow with the log however long the windows are. Two steps, after the
segment is published and its events are trimmed from Redis (so that the
events' memory is freed first; the records stay in Redis meanwhile):

``ids-published``
    read the records of the segment's ids from their buckets (``HMGET``, one per
    bucket and try) and write them to the segment's id file
    (:mod:`chatlog.eventstore.archive.idfiles`: temporary name, fsync, read
    back, rename).
``ids-removed``
    add the ids to the partition's filter of archived ids (a blocked Bloom
    filter per window and generation, expiring with its buckets; see
    ``append.lua``): :data:`RESERVE` makes room in it, then the segment's bits,
    built here, are ORed into it (:data:`OR_IN`); only then delete the records
    from their buckets (``HDEL``, one per bucket). An id is always in a bucket,
    or in the filter and a published id file, or in both.

A crash before or between the steps leaves the records in Redis (and maybe a
published file, bits set); the next pass finishes them (:func:`finish`: the file
is written once; setting bits again and deleting records already deleted change
nothing): re-running is idempotent. ``<prefix>:{p<N>}:archiver:ids`` holds the last
position of the newest segment whose ids are done.

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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from chatlog.errors import OutcomeUnknown, StoreUnavailable
from chatlog.eventstore.archive import idfiles
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import guard
from chatlog.eventstore.idempotency import BUCKETS, archived, as_retry, checked, record_of

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive
    from chatlog.eventstore.connection import Client
    from chatlog.eventstore.keys import Keys


class EventStore(Protocol):
    """What the archiver's ids steps use of the store (its windows on its append path)."""

    redis: Client
    keys: Keys
    _appender: Any


_NO_DIGEST = bytes(8)
#: Buckets per script call.
CHUNK = 2_000
#: Filter bits per id (<= 1.8% false positives with 6 bits set per id in 64-bit blocks).
BITS_PER_ID = 10
#: A generation's first filter piece, in 8-byte blocks (64 KiB: ~52k ids); each next
#: piece is twice its predecessor.
FIRST_BLOCKS = 8_192

#: KEYS[1] the partition's stream. ARGV, per filter (``<window ms>:<generation>``): its
#: name and the count n of ids to add. Reserves room for them in the filter's newest
#: piece, or makes a new piece (as big as the generation before had, at least FIRST
#: blocks, the first of a generation; twice the one before, the next; big enough for
#: the n ids). Returns per filter: the piece's key and its blocks. Forgets the
#: filters of generations past.
RESERVE = """
local tag = string.sub(KEYS[1], 1, -4)
local dirkey = tag .. 'idp'
local function parsed(v)
  local d = {blocks = {}, fill = 0, total = 0}
  if v then
    local list, fill = string.match(v, '^([^|]*)|(%d+)$')
    for b in string.gmatch(list, '%d+') do
      d.blocks[#d.blocks + 1] = tonumber(b)
      d.total = d.total + tonumber(b)
    end
    d.fill = tonumber(fill)
  end
  return d
end
local out = {}
for j = 1, #ARGV, 2 do
  local name, n = ARGV[j], tonumber(ARGV[j + 1])
  local w, g = string.match(name, '^(%d+):(-?%d+)$')
  w, g = tonumber(w), tonumber(g)
  local d = parsed(redis.call('HGET', dirkey, 'idf:' .. name))
  local last = d.blocks[#d.blocks]
  if not last or d.fill + n > math.floor(last * 64 / BITS) then
    local blocks = last and last * 2
    if not blocks then
      local before = redis.call('HGET', dirkey, 'idf:' .. w .. ':' .. string.format('%.0f', g - 1))
      blocks = math.max(FIRST, parsed(before).total)
    end
    blocks = math.max(blocks, math.ceil(n * BITS / 64))
    d.blocks[#d.blocks + 1] = blocks
    d.fill = 0
    local key = tag .. 'idf:' .. name .. ':' .. #d.blocks
    redis.call('SETRANGE', key, blocks * 8 - 1, '\\0')
    redis.call('PEXPIREAT', key, (g + 2) * w)
  end
  d.fill = d.fill + n
  local list = {}
  for _, b in ipairs(d.blocks) do list[#list + 1] = tostring(b) end
  redis.call('HSET', dirkey, 'idf:' .. name, table.concat(list, ',') .. '|' .. d.fill)
  for past = 2, 3 do  -- the filters of generations past are forgotten
    redis.call('HDEL', dirkey, 'idf:' .. w .. ':' .. string.format('%.0f', g - past))
  end
  out[#out + 1] = tag .. 'idf:' .. name .. ':' .. #d.blocks
  out[#out + 1] = d.blocks[#d.blocks]
end
return out
""".replace("BITS", str(BITS_PER_ID)).replace("FIRST", str(FIRST_BLOCKS))


#: KEYS[1] a filter's piece, KEYS[2] a scratch key; ARGV[1] bits to set in the piece.
OR_IN = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', 600000)
redis.call('BITOP', 'OR', KEYS[1], KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2])
return 1
"""


def set_bits(piece: bytearray, blocks: int, rec: bytes) -> None:
    """Set the 6 bits of ``rec``'s id in ``piece`` (its filter hash: 4 bytes choose the
    block, 6 the bits; bit p counted from the block's first byte's high bit, as SETBIT
    counts)."""
    at = int.from_bytes(rec[27:31]) % blocks * 8
    for p in rec[31:37]:
        p %= 64
        piece[at + p // 8] |= 0x80 >> (p % 8)


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
    tag = store.keys.log(partition)[: -len("log")]
    kept: list[_Kept]
    if body is None:
        kept = await _gather(store, archive, partition, last, tag)
        data = idfiles.encode_packed([k.entry for k in kept])
        await asyncio.to_thread(idfiles.publish, storage, partition, last, data)
        step("ids-published")
    else:
        entries = list(idfiles.entries(body))
        projects = {e.project: str(uuid.UUID(bytes=e.project)) for e in entries}
        numbers = await _numbers(store, tag, set(projects.values()))
        kept = []
        for e in entries:
            number = numbers.get(projects[e.project])
            if number is not None:
                rec = record_of(e.project, e.event_id, _NO_DIGEST)
                kept.append(_Kept(b"", rec, rec[11:27] + number, f"{tag}ids:{e.window_ms}:"
                                  f"{e.generation}:{_bucket(rec)}",
                                  f"{e.window_ms}:{e.generation}"))
    deletes: dict[str, list[bytes]] = {}  # bucket key -> fields
    filters: dict[str, list[bytes]] = {}  # filter name -> records
    for k in kept:
        deletes.setdefault(k.key, []).append(k.field)
        filters.setdefault(k.filter, []).append(k.rec)
    # First into the filter (ORed in: setting a bit again changes nothing), then out of
    # the buckets: each id is in one or both all along.
    args: list[Any] = []
    for name, recs in filters.items():
        args += [name, len(recs)]
    reserved = (await guard(store.redis.register_script(RESERVE)(
        keys=[store.keys.log(partition)], args=args))) if args else []
    for recs, piece, blocks in zip(filters.values(), reserved[::2], reserved[1::2],
                                   strict=True):
        mask = bytearray(int(blocks) * 8)
        for rec in recs:
            set_bits(mask, int(blocks), rec)
        await guard(store.redis.register_script(OR_IN)(
            keys=[piece, f"{tag}idf:scratch:{uuid.uuid4().hex}"], args=[bytes(mask)]))
    removed = 0
    keys = sorted(deletes)
    for i in range(0, len(keys), CHUNK):
        removed += int(await _per_bucket(store, partition, "HDEL", keys[i : i + CHUNK],
                                         [deletes[key] for key in keys[i : i + CHUNK]]))
    await guard(store.redis.set(_done_key(store, partition), last))
    step("ids-removed")
    return removed


#: KEYS[1] the partition's stream; ARGV[1] HMGET or HDEL, then per bucket: its key, the
#: count n of fields, the n fields. HMGET: the values, all buckets' in one list; HDEL:
#: how many fields it deleted. (One script call for many buckets: each is one command
#: here, where a pipeline costs the client a command each.)
PER_BUCKET = """
local hmget, out, j = ARGV[1] == 'HMGET', {}, 2
local deleted = 0
while j <= #ARGV do
  local n = tonumber(ARGV[j + 1])
  local got = redis.call(ARGV[1], ARGV[j], unpack(ARGV, j + 2, j + 1 + n))
  if hmget then
    for i = 1, n do out[#out + 1] = got[i] end
  else
    deleted = deleted + got
  end
  j = j + 2 + n
end
if hmget then return out end
return deleted
"""


async def _per_bucket(store: EventStore, partition: int, command: str, keys: list[str],
                      fields: list[list[bytes]]) -> Any:
    args: list[Any] = [command]
    for key, names in zip(keys, fields, strict=True):
        args += [key, len(names), *names]
    script = store.redis.register_script(PER_BUCKET)
    return await guard(script(keys=[store.keys.log(partition)], args=args))


def _bucket(rec: bytes) -> int:
    return int.from_bytes(rec[1:3]) % BUCKETS


async def _numbers(store: EventStore, tag: str, projects: set[str]) -> dict[str, bytes]:
    """The partition's numbers of ``projects`` (those that have one)."""
    names = sorted(projects)
    got = await guard(store.redis.hmget(f"{tag}idp", names)) if names else []
    return {name: n if isinstance(n, bytes) else str(n).encode()
            for name, n in zip(names, got, strict=True) if n is not None}


class _Kept(NamedTuple):
    """A remembered id on its way out of Redis."""

    entry: bytes  # its entry of the id file (packed)
    rec: bytes  # its record (:func:`.idempotency.record_of`)
    field: bytes  # its field in its bucket
    key: str  # its bucket
    filter: str  # its filter: "<window ms>:<generation>"


async def _gather(store: EventStore, archive: Archive, partition: int, last: str,
                  tag: str) -> list[_Kept]:
    """What Redis remembers of the ids of the segment ending at ``last``: read with
    HMGET, one per bucket and try (every id in the generation of its position in one
    window, the misses in the other's, then in the generations before and after)."""
    info = next(s for s in reversed(archive.segments(partition)) if s.last == last)

    def read() -> list[tuple[str, str, int]]:
        import pyarrow.parquet as pq

        table = pq.read_table(archive.storage.open(info.path),
                              columns=["project", "event_id", "position_ms"])
        return list(zip(*(table.column(c).to_pylist() for c in table.column_names),
                        strict=True))

    rows = await asyncio.to_thread(read)
    numbers = await _numbers(store, tag, {project for project, _, _ in rows})
    projects = {p: uuid.UUID(p).bytes for p in numbers}
    todo = []  # (position ms, record, field, bucket, project)
    for project, event_id, ms in rows:
        number = numbers.get(project)
        if number is not None:
            rec = record_of(projects[project], bytes.fromhex(event_id.replace("-", "")),
                            _NO_DIGEST)
            todo.append((ms, rec, rec[11:27] + number, _bucket(rec),
                         projects[project]))
    iw, ow = _windows(store)
    kept: list[_Kept] = []
    for window, delta in ((ow, 0), (iw, 0), (ow, -1), (iw, -1), (ow, 1), (iw, 1)):
        if not todo:
            break
        groups: dict[str, list[tuple[int, bytes, bytes, int, bytes]]] = {}
        for item in todo:
            groups.setdefault(f"{tag}ids:{window}:{item[0] // window + delta}:{item[3]}",
                              []).append(item)
        missed = []
        keys = list(groups)
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i : i + CHUNK]
            values = iter(await _per_bucket(store, partition, "HMGET", chunk,
                                            [[item[2] for item in groups[k]] for k in chunk]))
            for key in chunk:
                for item, value in zip(groups[key], values, strict=False):  # in order
                    if value is None:
                        missed.append(item)
                        continue
                    generation = item[0] // window + delta
                    kept.append(_Kept(_entry(item[4], item[1], value, window, generation),
                                      item[1], item[2], key, f"{window}:{generation}"))
        todo = missed
    return kept  # the rest: forgotten already (their window passed), or never remembered


def _entry(project: bytes, rec: bytes, value: bytes, window: int, generation: int) -> bytes:
    """The id file's entry of a record's ``value`` ("<ms offset>-<seq> <version> <digest>")."""
    pos, version, digest = [*value.split(b" ", 2), b""][:3]
    offset, seq = pos.split(b"-", 1)
    return idfiles.ENTRY.pack(project, rec[11:27], generation * window + int(offset), int(seq),
                              int(version), digest if len(digest) == 8 else _NO_DIGEST,
                              window, generation)


async def finish(store: EventStore, archive: Archive, partition: int,
                 step: Callable[[str], None]) -> None:
    """Begin a pass: remove orphans (:func:`remove_orphans`), then move the ids of the
    newest segment out of Redis if a crashed pass (or a version before id files) left
    them there."""
    await asyncio.to_thread(remove_orphans, archive, partition)
    segments = archive.segments(partition)
    done = await guard(store.redis.get(_done_key(store, partition)))
    if segments and (done.decode() if isinstance(done, bytes) else done) != segments[-1].last:
        await seal_ids(store, archive, partition, segments[-1].last, step)


def _done_key(store: EventStore, partition: int) -> str:
    """The last position of the newest segment whose ids have left Redis."""
    return f"{store.keys.tag(partition)}:archiver:ids"


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

    def doubt(self, ids: Sequence[str], args: list[Any],
              failed: BaseException) -> StoreUnavailable | OutcomeUnknown:
        """The append of ``ids`` failed with ``failed`` and may have been applied:
        resending it, or appending them again later, must look them up. ``failed``
        again, raised unless it says what happened (then resolved by resending)."""
        for i, event_id in enumerate(ids):
            args[5 + 4 * i] = as_retry(args[5 + 4 * i])
            self._doubted[event_id] = None
        while len(self._doubted) > self.DOUBTED:
            del self._doubted[next(iter(self._doubted))]
        if isinstance(failed, StoreUnavailable | OutcomeUnknown):
            return failed
        raise failed

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
