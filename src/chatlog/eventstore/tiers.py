"""One log across two tiers: the archive's sealed segments, then Redis's hot tail.

The archiver publishes a segment *before* it removes the segment's events
from Redis (and their aggregate index entries). So a read of Redis taken at
one moment, and a read of the archive made after it, together hold every
event kept, and the boundary can be found from the Redis read alone:

- the Redis read returns the entries after ``after`` and, in the same
  transaction, the stream's first entry ``F``;
- when the first entry returned is ``F`` itself (or the stream is empty),
  events between ``after`` and ``F`` may have left Redis: they are in the
  archive, which is read for positions after ``after`` and *before* the
  first Redis entry; otherwise Redis alone holds everything after ``after``.

An event a crash left in both tiers (published, not yet removed from Redis)
is taken from Redis only: archive entries are cut at the first Redis entry,
so nothing repeats. The archive's manifest is cached; it is re-read when a
read of the archive comes back short of both its limit and the Redis tier
(a segment may have been published since), so nothing is skipped either.

Aggregate reads use the same rule by version: the archiver pops the archived
positions off the head of each aggregate's index list, so versions up to
``current version - list length`` are in the archive (found through its
aggregate index, never by scanning segments) and the rest in Redis.

Everything here is synchronous file I/O on the archive side; the store calls
it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from chatlog.errors import PositionTrimmed
from chatlog.eventstore._cold import cold_page, holds_after
from chatlog.eventstore._watermark import capped
from chatlog.eventstore.codec import (
    START,
    Cursor,
    flat_field,
    flat_fields,
    parse_position,
    position_before,
)
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys

if TYPE_CHECKING:
    from chatlog.eventstore._topology import Topology
    from chatlog.eventstore.archive import Archive

#: A stream entry with its fields as the flat list the server sends.
FlatEntry = tuple[bytes, list[bytes]]
#: A stream entry as a tail yields it: (partition, position, fields).
RawEntry = tuple[int, bytes, dict[bytes, bytes]]

#: KEYS[1] stream, KEYS[2] aggregate index list, KEYS[3] versions hash; ARGV[1]
#: aggregate, ARGV[2] first version wanted, ARGV[3] how many (-1: all).
#: Returns ``{offset, row...}``: versions up to ``offset`` are no longer in the
#: list (archived); each row is ``{position, fields}``, or ``{position}`` when
#: the entry left the stream (deliberately deleted).
READ_AGGREGATE_TIERED = """
local n = redis.call('LLEN', KEYS[2])
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local offset = current - n
if offset < 0 then offset = 0 end
local first = tonumber(ARGV[2]) - 1 - offset
local start = first
if start < 0 then start = 0 end
local stop = -1
if tonumber(ARGV[3]) >= 0 then
  stop = first + tonumber(ARGV[3]) - 1
  if stop < start then return {offset} end
end
local out = {offset}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], start, stop)) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] then out[#out + 1] = e[1] else out[#out + 1] = {id} end
end
return out
"""


def archive_if_there(directory: str) -> Archive | None:
    """The archive in local ``directory`` once it exists (the archiver creates it on its
    first pass); None before, so opening the store creates nothing."""
    if not os.path.isdir(directory):
        return None
    from chatlog.eventstore.archive import Archive

    return Archive.open(directory)


def _key(position: bytes | str) -> tuple[int, int]:
    return parse_position(text(position))


def needs_archive(entries: list[Any], first: bytes | str | None) -> bool:
    """Whether events after the read's start may be in the archive: the Redis read
    (``entries``, taken with the stream's ``first`` entry) starts at the stream's
    first entry, or the stream is empty."""
    if first is None:
        return True
    if not entries:
        return False
    return _key(entries[0][0]) == _key(first)


def archived_between(archive: Archive, partition: int, after: str, before: bytes | None,
                     limit: int) -> list[FlatEntry]:
    """Archived entries after ``after`` and before position ``before`` (None: no bound),
    oldest first, at most ``limit``; the manifest is re-read when a short answer
    might come from a stale one."""
    bound = None if before is None else _key(before)
    for attempt in (0, 1):
        got = archive.read_flat(partition, after, limit)
        kept = got if bound is None else [e for e in got if _key(e[0]) < bound]
        if len(got) >= limit or len(kept) < len(got) or attempt == 1:
            return kept
        archive.reload()
    raise AssertionError("unreachable")


def archived_versions(archive: Archive, partition: int, aggregate: str, from_version: int,
                      count: int) -> list[FlatEntry]:
    """Versions ``from_version .. from_version + count - 1`` of ``aggregate`` from the
    archive's aggregate index; re-reads the manifest once if some are missing. The
    answer may still lack versions (deliberately deleted): the caller checks."""
    wanted = list(range(from_version, from_version + count))
    got: list[FlatEntry] = []
    for attempt in (0, 1):
        got = archive.read_aggregate(partition, aggregate, from_version, count)
        if [int(flat_field(flat, b"v")) for _, flat in got] == wanted or attempt == 1:
            break
        archive.reload()
    return got


def iter_archive(archive: Archive, partition: int, after: str = START,
                 before: bytes | None = None) -> Iterator[Any]:
    """The archive's columnar batches after ``after`` and before ``before`` (None: no
    bound), manifest re-read first: ``pyarrow.RecordBatch``es with the columns
    position, event_id, aggregate, version, type, time, body."""
    import pyarrow as pa

    archive.reload()
    bound = None if before is None else _key(before)
    for batch in archive.iter_batches(partition, after):
        if bound is not None and _key(str(batch.column("position")[-1])) >= bound:
            # the batch that reaches the Redis tier: only its rows before it
            keep = [_key(p) < bound for p in batch.column("position").to_pylist()]
            batch = batch.filter(pa.array(keep))
            if batch.num_rows:
                yield batch
            return
        yield batch


def last_archived_before(archive: Archive, partition: int, before: str) -> str | None:
    """The last archived position before ``before`` (None: none), reading at most the
    one segment that straddles it."""
    archive.reload()
    bound = parse_position(before)
    last: str | None = None
    for segment in archive.segments(partition):
        if _key(segment.last) < bound:
            last = segment.last
            continue
        if _key(segment.first) < bound:
            for pos, _ in archive.read_flat(partition, last or START, segment.count):
                if _key(pos) >= bound:
                    break
                last = pos.decode()
        break
    return last


def batch_entries(batch: Any) -> list[FlatEntry]:
    """An archive batch's rows as stream entries ``(position, flat fields)`` (for the
    few consumers that need entries rather than columns)."""
    import pyarrow as pa

    def column(name: str) -> list[Any]:
        col = batch.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.cast(pa.binary())
        return col.to_pylist()  # type: ignore[no-any-return]

    return [
        (pos, [b"i", eid, b"t", kind, b"a", agg, b"v", str(version).encode(), b"b", body])
        for pos, eid, kind, agg, version, body in zip(
            column("position"), column("event_id"), column("type"), column("aggregate"),
            column("version"), column("body"), strict=True)
    ]


async def archived_head(archive: Archive, partition: int) -> str:
    """The archive's newest position (manifest re-read first; ``START`` when empty)."""

    def newest() -> str | None:
        archive.reload()
        return archive.newest(partition)

    return await asyncio.to_thread(newest) or START


async def not_archived(archive: Archive, cursor: Cursor, partitions: Sequence[int]) -> list[int]:
    """Those of ``partitions`` whose position in ``cursor`` the archive does not hold (one
    the archiver sealed, then trimmed from Redis, is kept there: not lost)."""

    def held(p: int) -> bool:
        got = archived_between(archive, p, position_before(cursor.positions[p]), None, 1)
        return bool(got) and _key(got[0][0]) == _key(cursor.positions[p])

    return [p for p in partitions if not await asyncio.to_thread(held, p)]


async def oldest_cursor(cursor: Cursor,
                        horizon: Callable[[int], Awaitable[str | None]]) -> Cursor:
    """``cursor`` with every position inside deleted history moved up to its partition's
    ``horizon``: the oldest cursor still available from where ``cursor`` stood."""
    for p, position in enumerate(cursor.positions):
        last = await horizon(p)
        if last is not None and position != START and _key(position) < _key(last):
            cursor = cursor.advanced(p, last)
    return cursor


def delete_archived(archive: Archive, partition: int, before: str) -> int:
    """``archive.delete_before`` when the partition has segments (nothing to do, and no
    manifest to write, otherwise); how many events it deleted."""
    archive.reload()
    if not archive.segments(partition):
        return 0
    return archive.delete_before(partition, before)


def archive_tier(archive: Archive,
                 partition: int) -> tuple[int, int, int, str | None, str | None]:
    """``(segments, events, bytes, oldest, newest)`` of the partition's archive."""
    archive.reload()
    segments = archive.segments(partition)
    return (len(segments), sum(s.count for s in segments), sum(s.bytes for s in segments),
            archive.oldest(partition), archive.newest(partition))


# -- the store's reads, completed from the archive ------------------------------------


async def read_both(topology: Topology, keys: Keys, archive: Archive, partition: int,
                    after: str, limit: int, *, flat: bool) -> list[Any]:
    """Up to ``limit`` entries after ``after`` across both tiers (flat fields with
    ``flat``, else dicts), checked against the deletion horizon.

    A cursor before the archive's newest position (as last seen) is served from
    the archive alone when it holds a whole page after it (older than anything
    Redis holds but a crash's leftovers, the same events), the horizon read
    meanwhile (one GET); otherwise Redis first (its read checks the horizon), and
    the rule above finds the boundary."""
    if limit > 0 and holds_after(archive, partition, after):
        cold_only = await cold_page(topology, keys, archive, partition, after, limit)
        if len(cold_only) >= limit:
            return cold_only if flat else [(pos, flat_fields(f)) for pos, f in cold_only]
    read, first = await topology.read_checked_first(keys, partition, after, limit, flat=flat)
    hot: list[Any] = read
    if not needs_archive(hot, first):
        return hot
    archived = await asyncio.to_thread(
        archived_between, archive, partition, after, hot[0][0] if hot else None, limit)
    cold: list[Any] = archived if flat else [(pos, flat_fields(f)) for pos, f in archived]
    return cold + hot[: limit - len(archived)]


async def scan_both(archive: Archive | None, partition: int, chunk: int,
                    read_flat: Callable[[int, str, int], Awaitable[list[FlatEntry]]],
                    ) -> AsyncIterator[Any]:
    """The archive's batches, then chunks of ``read_flat`` (the tiered read), the next
    chunk asked for before this one is yielded."""
    after = START
    if archive is not None:
        # The next batch is decoded (in a thread, without the GIL) while this one is used.
        batches = iter_archive(archive, partition)
        ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        try:
            while (batch := await ahead) is not None:
                after = str(batch.column("position")[-1])
                ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                yield batch
        finally:
            await asyncio.gather(ahead, return_exceptions=True)
    request = asyncio.ensure_future(read_flat(partition, after, chunk))
    try:
        while True:
            entries = await request
            if not entries:
                return
            full = len(entries) >= chunk
            if full:  # the server reads the next chunk while this one is used
                request = asyncio.ensure_future(
                    read_flat(partition, text(entries[-1][0]), chunk))
                await asyncio.sleep(0)  # let the request go out first
            yield entries
            if not full:
                return
    finally:
        if not request.done():
            request.cancel()
        await asyncio.gather(request, return_exceptions=True)


async def read_versions(script: Any, keys: Keys, archive: Archive | None, partition: int,
                        aggregate: str, from_version: int, limit: int | None,
                        horizon: Callable[[], Awaitable[str | None]]) -> list[FlatEntry]:
    """An aggregate's entries from ``from_version`` (at most ``limit``), archived versions
    from the archive's aggregate index, the rest from Redis (``script`` is
    :data:`READ_AGGREGATE_TIERED`); :class:`PositionTrimmed` for a deleted version."""
    reply = await guard(script(
        keys=[keys.log(partition), keys.aggregate_index(partition, aggregate),
              keys.versions(partition)],
        args=[aggregate, from_version, -1 if limit is None else limit]))
    offset, rows = int(reply[0]), reply[1:]
    flats: list[FlatEntry] = []
    if from_version <= offset and (limit is None or limit > 0):
        count = offset - from_version + 1 if limit is None else min(
            limit, offset - from_version + 1)
        if archive is not None:
            flats = await asyncio.to_thread(
                archived_versions, archive, partition, aggregate, from_version, count)
        versions = [int(flat_field(flat, b"v")) for _, flat in flats]
        wanted = list(range(from_version, from_version + count))
        if versions != wanted:
            missing = next((w for v, w in zip([*versions, 0], wanted, strict=False) if v != w),
                           from_version)
            raise PositionTrimmed(partition, f"version {missing} of {aggregate}",
                                  await horizon() or START)
    for row in rows:
        if len(row) == 1:
            raise PositionTrimmed(partition, text(row[0]), await horizon() or "")
        flats.append((row[0], row[1]))
    return flats


async def archived_under(redis: Any, keys: Keys, archive: Archive, cursor: Cursor,
                         batch: list[RawEntry], count: int) -> list[RawEntry]:
    """``batch`` (from XREAD after ``cursor``) preceded by the events the archiver moved
    out of Redis before the XREAD read them (a tail a whole hot window behind).

    The stream's first position ``F`` is read after the XREAD: if ``F`` comes
    before a partition's first entry ``e0``, ``F`` was there when XREAD ran
    (entries leave from the head only), so nothing between the cursor and
    ``e0`` was archived. Otherwise the archive is read for that range.
    """
    firsts: dict[int, bytes] = {}
    for p, pos, _ in batch:
        firsts.setdefault(p, pos)
    pipe = redis.pipeline(transaction=False)
    for p in firsts:
        pipe.xrange(keys.log(p), "-", "+", 1)
    heads = await guard(pipe.execute())
    missed: list[RawEntry] = []
    for (p, e0), head in zip(firsts.items(), heads, strict=True):
        if head and _key(head[0][0]) < _key(e0):
            continue
        after = cursor.positions[p]
        while True:
            page = await asyncio.to_thread(archived_between, archive, p, after, e0, count)
            missed.extend((p, pos, flat_fields(flat)) for pos, flat in page)
            if len(page) < count:
                break
            after = text(page[-1][0])
    return missed + batch if missed else batch


async def delete_both(redis: Any, keys: Keys, archive: Archive, partition: int,
                      before: str) -> int:
    """The archive's part of a deliberate deletion before ``before``: record the horizon
    (the last position deleted, in either tier) first, then delete the archived
    events; how many. The caller then trims Redis."""
    row = await guard(redis.xrevrange(keys.log(partition), f"({before}", "-", 1))
    last = text(row[0][0]) if row else await asyncio.to_thread(
        last_archived_before, archive, partition, before)
    if last is not None:
        current = await guard(redis.get(keys.horizon(partition)))
        if not current or _key(current) < _key(last):
            await guard(redis.set(keys.horizon(partition), last))
    return await asyncio.to_thread(delete_archived, archive, partition, before)


async def tail_both(topology: Topology, keys: Keys, archive: Archive,
                    read_raw: Callable[[int, str, int], Awaitable[list[Any]]], cursor: Cursor,
                    partitions: list[int], *, block: float, count: int,
                    on_idle: Callable[[], Awaitable[None]] | None,
                    ) -> AsyncIterator[list[RawEntry]]:
    """A tail across tiers: catch up through the tiered ``read_raw`` (a cursor may lie in
    the archive; XREAD only sees what Redis holds), then XREAD, each batch preceded
    by what the archiver moved past the cursor meanwhile (:func:`archived_under`)."""
    for p in partitions:
        while True:
            rows = await read_raw(p, cursor.positions[p], count)
            if not rows:
                break
            cursor = cursor.advanced(p, text(rows[-1][0]))
            yield [(p, pos, fields) for pos, fields in rows]
            if len(rows) < count:
                break
    hot = topology.tail(keys, cursor, partitions, block=block, count=count, on_idle=on_idle)
    try:
        async for batch in hot:
            batch = await archived_under(topology.redis, keys, archive, cursor, batch, count)
            positions = list(cursor.positions)
            for p, pos, _ in batch:
                positions[p] = text(pos)
            cursor = Cursor(positions)
            yield batch
    finally:
        await hot.aclose()  # type: ignore[attr-defined]


def archived_before(archive: Archive, partition: int, before: bytes | str | None,
                    limit: int) -> list[FlatEntry]:
    """Up to ``limit`` archived entries before ``before`` (None: from the newest), newest
    first (for reading backwards). Reads segments newest first, each from its start:
    only the segments the page reaches."""
    archive.reload()
    bound = None if before is None else _key(before)
    segments = archive.segments(partition)
    out: list[FlatEntry] = []
    for i in range(len(segments) - 1, -1, -1):
        segment = segments[i]
        if bound is not None and _key(segment.first) >= bound:
            continue
        after = segments[i - 1].last if i > 0 else START
        rows = archive.read_flat(partition, after, segment.count)
        kept = [e for e in rows if bound is None or _key(e[0]) < bound]
        out.extend(reversed(kept[-(limit - len(out)):]))
        if len(out) >= limit:
            break
    return out


async def scan_hot(topology: Topology, keys: Keys, partition: int,
                   chunk: int) -> AsyncIterator[list[FlatEntry]]:
    """See :meth:`EventStore.scan_flat` (under ``ack=replicated``: up to the committed
    position)."""
    key = keys.log(partition)
    upto = None
    if topology.committed_only:
        upto = (await topology.committed(keys, [partition]))[0]
    request = asyncio.ensure_future(topology.xrange_flat(key, "-", chunk))
    try:
        while True:
            entries = await request
            if upto is not None:
                kept = capped(entries, upto)
                if len(kept) < len(entries):
                    if kept:
                        yield kept
                    return
            if not entries:
                return
            full = len(entries) >= chunk
            if full:  # the server reads the next chunk while this one is used
                request = asyncio.ensure_future(
                    topology.xrange_flat(key, f"({text(entries[-1][0])}", chunk))
                await asyncio.sleep(0)  # let the request go out first
            yield entries
            if not full:
                return
    finally:
        if not request.done():
            request.cancel()
        await asyncio.gather(request, return_exceptions=True)
