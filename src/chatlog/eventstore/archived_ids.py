"""Remembered ids of archived events: out of Redis, kept exactly by the archive.

When the archiver seals a segment, the records of its events' ids
(:mod:`.idempotency`) leave Redis with the events, so that Redis memory does
not grow with the log however long the windows are. Two steps, after the
segment is published and its events are trimmed from Redis (so that the
events' memory is freed first; the records stay in Redis meanwhile):

``ids-published``
    read the records of the segment's ids from their buckets (``HMGET``, one per
    bucket and try, pipelined: :mod:`._sealed_ids` computes them column-wise from the
    events the seal has in hand) and write them to the segment's id file
    (:mod:`chatlog.eventstore.archive.idfiles`: temporary name, fsync, read
    back, rename).
``ids-removed``
    add the ids to the partition's filter of archived ids (a blocked Bloom
    filter per window and generation, expiring with its buckets; see
    ``append.lua``): :data:`RESERVE` makes room in it, then the segment's bits,
    built here, are ORed into it (:data:`OR_IN`); only then delete the records
    from their buckets (``HDEL``, one per bucket, pipelined). An id is always in a bucket,
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
from typing import TYPE_CHECKING, Any, Protocol

from chatlog.errors import OutcomeUnknown, StoreUnavailable
from chatlog.eventstore.archive import idfiles
from chatlog.eventstore.codec import flat_field, parse_position
from chatlog.eventstore.connection import guard
from chatlog.eventstore.idempotency import archived, as_retry, checked
from chatlog.tuning import gc_paused

if TYPE_CHECKING:
    from chatlog.eventstore._sealed_ids import Identities
    from chatlog.eventstore.archive import Archive
    from chatlog.eventstore.connection import Client
    from chatlog.eventstore.keys import Keys


class EventStore(Protocol):
    """What the archiver's ids steps use of the store (its windows on its append path)."""

    redis: Client
    keys: Keys
    _appender: Any


#: Filter bits per id (<= 1.8% false positives with 6 bits set per id in 64-bit blocks).
BITS_PER_ID = 10
#: A generation's first filter piece, in 8-byte blocks (64 KiB: ~52k ids), at least;
#: each next piece is twice its predecessor.
FIRST_BLOCKS = 8_192
#: A generation's first piece holds this many times the ids the generation before got
#: (in quarters: 5/4), so that a steady rate needs one piece a generation.
HEADROOM_QUARTERS = 5
#: KEYS[1] the partition's stream. ARGV, per filter (``<window ms>:<generation>``): its
#: name and the count n of ids to add. Reserves room for them in the filter's newest
#: piece, or makes a new piece (the first of a generation: room for 5/4 of the ids the
#: generation before got, at least FIRST blocks; the next: twice the one before; big
#: enough for the n ids), expiring with the generation's buckets. Returns per filter:
#: the piece's key and its blocks. Forgets the filters of generations past (their
#: directory entries and pieces).
RESERVE = """
local tag = string.sub(KEYS[1], 1, -4)
local dirkey = tag .. 'idp'
local function parsed(v)
  local d = {blocks = {}, fill = 0, total = 0, ids = 0}
  if v then
    local list, fill = string.match(v, '^([^|]*)|(%d+)$')
    for b in string.gmatch(list, '%d+') do
      d.blocks[#d.blocks + 1] = tonumber(b)
      d.total = d.total + tonumber(b)
    end
    d.fill = tonumber(fill)
    for k = 1, #d.blocks - 1 do d.ids = d.ids + math.floor(d.blocks[k] * 64 / BITS) end
    d.ids = d.ids + d.fill
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
      blocks = math.max(FIRST, math.ceil(parsed(before).ids * QUARTERS / 4 * BITS / 64))
    end
    blocks = math.max(blocks, math.ceil(n * BITS / 64))
    d.blocks[#d.blocks + 1] = blocks
    d.fill = 0
    local key = tag .. 'idf:' .. name .. ':' .. #d.blocks
    redis.call('SETRANGE', key, blocks * 8 - 1, '\\0')
    redis.call('PEXPIREAT', key, string.format('%.0f', (g + 2) * w))
  end
  d.fill = d.fill + n
  local list = {}
  for _, b in ipairs(d.blocks) do list[#list + 1] = tostring(b) end
  redis.call('HSET', dirkey, 'idf:' .. name, table.concat(list, ',') .. '|' .. d.fill)
  for past = 2, 3 do  -- the filters of generations past are forgotten
    local old = w .. ':' .. string.format('%.0f', g - past)
    local gone = parsed(redis.call('HGET', dirkey, 'idf:' .. old))
    for k = 1, #gone.blocks do redis.call('DEL', tag .. 'idf:' .. old .. ':' .. k) end
    redis.call('HDEL', dirkey, 'idf:' .. old)
  end
  out[#out + 1] = tag .. 'idf:' .. name .. ':' .. #d.blocks
  out[#out + 1] = d.blocks[#d.blocks]
end
return out
""".replace("BITS", str(BITS_PER_ID)).replace("FIRST", str(FIRST_BLOCKS)).replace(
    "QUARTERS", str(HEADROOM_QUARTERS))


#: KEYS[1] a filter's piece (``<tag>idf:<window ms>:<generation>:<k>``), KEYS[2] a
#: scratch key; ARGV[1] bits to set in the piece. BITOP's destination loses its expiry:
#: the piece's is set again (it expires with its generation's buckets), else every
#: piece of every generation lived forever and Redis memory grew with the log.
#: (Measured against ``BITFIELD ... SET u1`` per bit for 14,000 ids into an 8 MiB
#: piece: 5.9 against 17 us of CPU an id, client and server; and against ORing in
#: slices of 256 KiB: the same CPU, three times the AOF bytes.)
OR_IN = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', 600000)
redis.call('BITOP', 'OR', KEYS[1], KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2])
local w, g = string.match(KEYS[1], 'idf:(%d+):(-?%d+):%d+$')
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', (tonumber(g) + 2) * tonumber(w)))
return 1
"""


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
                   step: Callable[[str], None],
                   entries: Sequence[tuple[bytes, Sequence[bytes]]] | None = None) -> int:
    """Move the remembered ids of the published segment ending at ``last`` out of Redis
    into its id file (the two steps above); how many records left Redis. ``entries``:
    the segment's events when the caller has them (else the segment is read)."""
    # numpy and pyarrow: imported by the first seal, not by every process that appends
    from chatlog.eventstore._sealed_ids import (
        Commands,
        Remembered,
        file_body,
        filter_bits,
        gather,
        of_file,
    )

    storage = archive.storage
    path = idfiles.ids_path(storage, partition, last)
    body = await asyncio.to_thread(_cache(archive).body, storage, path)
    tag = store.keys.log(partition)[: -len("log")]
    commands = Commands(store.redis)
    try:
        if body is None:
            ids = await asyncio.to_thread(_identities, archive, partition, last, entries)
            numbers = await _numbers(store, tag, set(ids.projects))
            iw, ow = _windows(store)
            found, values = await gather(commands, ids, numbers, tag, (
                (ow, 0), (iw, 0), (ow, -1), (iw, -1), (ow, 1), (iw, 1)))
            data = idfiles.encode_sorted(await asyncio.to_thread(file_body, ids, found, values))
            await asyncio.to_thread(idfiles.publish, storage, partition, last, data)
            step("ids-published")
        else:  # published by a pass that crashed: take the ids from the file
            ids, window, generation = await asyncio.to_thread(of_file, body)
            kept, fields = ids.fields(await _numbers(store, tag, set(ids.projects)))
            found = Remembered(kept, window[kept], generation[kept], fields)
        # First into the filter (ORed in: setting a bit again changes nothing), then out
        # of the buckets: each id is in one or both all along.
        filters = found.filters()
        args: list[Any] = [x for name, at in filters for x in (name, len(at))]
        reserved = (await guard(store.redis.register_script(RESERVE)(
            keys=[store.keys.log(partition)], args=args))) if args else []
        for (_, at), piece, blocks in zip(filters, reserved[::2], reserved[1::2], strict=True):
            mask = filter_bits(ids.hashes[found.index[at]], int(blocks))
            await guard(store.redis.register_script(OR_IN)(
                keys=[piece, f"{tag}idf:scratch:{uuid.uuid4().hex}"], args=[mask]))
        with gc_paused():
            deletes = [("HDEL", key, *fields) for key, fields in found.bucket_keys(ids, tag)]
        removed = sum(int(n) for n in await commands.run(deletes))
    finally:
        await commands.close()
    await guard(store.redis.set(_done_key(store, partition), last))
    step("ids-removed")
    return removed


def _identities(archive: Archive, partition: int, last: str,
                entries: Sequence[tuple[bytes, Sequence[bytes]]] | None) -> Identities:
    """The ids of the segment ending at ``last``: from its ``entries``, or read from it."""
    from chatlog.eventstore._sealed_ids import Identities

    if entries is None:
        import pyarrow.parquet as pq

        info = next(s for s in reversed(archive.segments(partition)) if s.last == last)
        table = pq.read_table(archive.storage.open(info.path),
                              columns=["project", "event_id", "position_ms"])
        return Identities.of(table.column("project"), table.column("event_id"),
                             table.column("position_ms").to_numpy())
    with gc_paused():
        return _columns(entries)


def _columns(entries: Sequence[tuple[bytes, Sequence[bytes]]]) -> Identities:
    import pyarrow as pa
    import pyarrow.compute as pc

    from chatlog.eventstore._sealed_ids import Identities

    flats = [flat for _, flat in entries]
    if all(len(f) == 10 and f[0] == b"i" and f[4] == b"a" for f in flats):
        ids, aggregates = [f[1] for f in flats], [f[5] for f in flats]
    else:
        ids, aggregates = ([flat_field(f, b"i") for f in flats],
                           [flat_field(f, b"a") for f in flats])
    positions = pa.array([p if isinstance(p, bytes) else str(p).encode() for p, _ in entries],
                         pa.binary()).cast(pa.string())
    ms = pc.list_element(pc.split_pattern(positions, "-", max_splits=1), 0).cast(pa.int64())
    projects = pc.list_element(pc.split_pattern(
        pa.array(aggregates, pa.binary()).cast(pa.string()), "/", max_splits=1), 0)
    return Identities.of(projects, pa.array(ids, pa.binary()), ms.to_numpy())


async def _numbers(store: EventStore, tag: str, projects: set[str]) -> dict[str, bytes]:
    """The partition's numbers of ``projects`` (those that have one)."""
    names = sorted(projects)
    got = await guard(store.redis.hmget(f"{tag}idp", names)) if names else []
    return {name: n if isinstance(n, bytes) else str(n).encode()
            for name, n in zip(names, got, strict=True) if n is not None}


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
