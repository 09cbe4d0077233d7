"""The archiver: moves each partition's events older than its hot window from Redis
into sealed archive segments, one archiver per partition at a time.

One seal, in this order (a crash at any step leaves every event in Redis, in a
published segment, or in both; never in neither)::

    read the oldest events of the stream beyond the hot window
    stage    write the segment under a temporary name, fsync it      -> "written"
             read it back, check its count and checksum               -> "verified"
    fence    check the lease is still ours (fencing token)
    publish  rename it into place                                      -> "renamed"
             add its aggregate index and manifest entry, durably       -> "published"
    trim     drop its positions from the aggregates' index lists       -> "index-trimmed"
             XTRIM MINID past its last position                        -> "trimmed"
    ids      its ids: into the archive, out of Redis (archived_ids) -> "ids-published", ...

A pass first finishes what a crashed one left (removes unpublished files, trims Redis
up to the newest published position): re-running is idempotent. Redis keys, beside
its stream: ``<prefix>:{p<N>}:archiver`` the lease (``"<token> <holder>"``, expires)
and ``<prefix>:{p<N>}:archiver:fence`` the last fencing token handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatlog.errors import ArchiveConflict, ChatlogError, InvalidInput, StoreUnavailable
from chatlog.eventstore._archiver_scan import segments_beyond
from chatlog.eventstore.archived_ids import finish, seal_ids
from chatlog.eventstore.archiver_counters import ArchiverCounters
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import UNAVAILABLE, raise_if_cancelled, text
from chatlog.eventstore.project_index import trim_project_indexes
from chatlog.eventstore.store import EventStore
from chatlog.eventstore.waits import publish_then_snapshot
from chatlog.settings import Settings

if TYPE_CHECKING:  # pyarrow is imported when the first pass opens the archive
    from chatlog.eventstore.archive import Archive

log = logging.getLogger(__name__)

#: The steps a seal goes through, in order (the fault hook's names).
STEPS = ("written", "verified", "renamed", "published", "index-trimmed", "trimmed",
         "ids-published", "ids-removed")
#: The most events the count bound is exceeded by before a pass seals (a tenth of the
#: window below 100,000): Redis holds a window of 200,000 plus up to this (~6 MB),
#: not plus 20,000, and segments are still of 10,000 events or more.
MARGIN_CAP = 10_000
#: Aggregate index keys per trimming script call.
_KEYS_PER_CALL = 500
#: Errors after which the next pass simply tries again.
_RETRYABLE: tuple[type[BaseException], ...] = (StoreUnavailable, *UNAVAILABLE)

#: KEYS[1] lease, KEYS[2] fence counter; ARGV[1] holder, ARGV[2] ttl ms.
#: Returns the holder's fencing token, or 0 when another holder has the lease.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ' ', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(cur, 1, sep - 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

#: KEYS[1] lease; ARGV[1] "<token> <holder>", ARGV[2] ttl ms (0: release).
#: Returns 1 when the lease was still that holder's (renewed or released), else 0.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

#: KEYS: aggregate index lists; ARGV[1], ARGV[2]: the last archived position's ms and
#: seq. Pops each list's head positions up to it; returns how many it popped.
TRIM_INDEX = """
local lms, lseq = tonumber(ARGV[1]), tonumber(ARGV[2])
local popped = 0
for _, key in ipairs(KEYS) do
  local n, done = 0, false
  while not done do
    local head = redis.call('LRANGE', key, n, n + 63)
    if #head == 0 then break end
    for _, pos in ipairs(head) do
      local dash = string.find(pos, '-', 1, true)
      local ms = tonumber(string.sub(pos, 1, dash - 1))
      local seq = tonumber(string.sub(pos, dash + 1))
      if ms < lms or (ms == lms and seq <= lseq) then n = n + 1 else done = true break end
    end
  end
  if n > 0 then
    redis.call('LTRIM', key, n, -1)
    popped = popped + n
  end
end
return popped
"""


@dataclass(frozen=True, slots=True)
class HotWindow:
    """What a partition keeps in Redis; 0 turns a bound off."""

    events: int = 500_000
    seconds: float = 0.0
    bytes: int = 512 * 1024 * 1024

    @property
    def bounded(self) -> bool:
        return bool(self.events or self.seconds or self.bytes)


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass did to one partition."""

    partition: int
    #: Events sealed into new segments.
    archived: int = 0
    segments: int = 0
    #: Stream entries removed from Redis (including a crashed pass's leftovers).
    trimmed: int = 0
    #: Why nothing was done ("lease held by another archiver", "within the window").
    skipped: str = ""


Progress = Callable[[int, int, int], None]
"""``(partition, events sealed so far, events to seal)``, called as a pass goes."""


class Lease:
    """One archiver per partition: a Redis key with a fencing token in the partition's slot.

    :meth:`acquire` gives a token that grows with every new holder; the archive
    refuses to publish with a token smaller than one that published before.
    """

    def __init__(self, store: EventStore, partition: int, *, ttl: float = 30.0,
                 holder: str | None = None) -> None:
        tag = store.keys.tag(partition)
        self.key = f"{tag}:archiver"
        self.fence_key = f"{tag}:archiver:fence"
        self.redis = store.redis
        self.ttl_ms = max(int(ttl * 1000), 1)
        self.holder = holder or uuid.uuid4().hex
        self.token = 0
        self._acquire = store.redis.register_script(ACQUIRE)
        self._renew = store.redis.register_script(RENEW)

    async def acquire(self) -> int:
        """Take (or keep) the lease; its fencing token, or 0 when another holder has it."""
        self.token = int(await self._acquire(keys=[self.key, self.fence_key],
                                             args=[self.holder, self.ttl_ms]))
        return self.token

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours (expired, taken over)."""
        if not self.token:
            return False
        ok = int(await self._renew(keys=[self.key],
                                   args=[f"{self.token} {self.holder}", self.ttl_ms]))
        if not ok:
            self.token = 0
        return bool(ok)

    async def release(self) -> None:
        if self.token:
            await self._renew(keys=[self.key], args=[f"{self.token} {self.holder}", 0])
            self.token = 0


@contextlib.asynccontextmanager
async def holding_lease(
    store: EventStore, partition: int, *, ttl: float = 30.0, wait: float = 120.0
) -> AsyncIterator[int]:
    """Hold ``partition``'s archiver lease for the block (waiting up to ``wait`` s for
    a running pass to end), renewed while held; yields its fencing token.

    No archiver publishes while it is held, and passing the token to
    :meth:`Archive.delete_before` (``fence=``) fences out any older holder: the way
    to change a partition's archive (a deliberate deletion) beside running
    ``chatlog serve`` nodes.
    """
    lease = Lease(store, partition, ttl=ttl)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.05
    while not await lease.acquire():
        if loop.time() > deadline:
            raise ArchiveConflict(
                f"partition {partition}: an archiver held its lease for {wait:g} s; "
                "try again when its pass has ended"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await lease.renew()

    renewer = loop.create_task(renew())
    try:
        yield lease.token
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_RETRYABLE):
            await renewer
        with contextlib.suppress(*_RETRYABLE):
            await lease.release()


class LeaseLost(ChatlogError):
    """The archiver's lease expired or was taken over mid-pass; nothing more is published."""


class Archiver:
    """Seals events beyond each partition's hot window into the archive.

    ``run_pass`` does one pass over the partitions (``chatlog archive``);
    ``start``/``stop`` run passes every ``interval`` seconds in the background
    (``chatlog serve``).
    """

    def __init__(
        self,
        store: EventStore,
        archive: Archive | str,
        window: HotWindow,
        *,
        segment_events: int = 100_000,
        interval: float = 30.0,
        lease_ttl: float = 30.0,
        crash_at: str | None = None,
        margin_cap: int = MARGIN_CAP,
    ) -> None:
        if crash_at is not None and crash_at not in STEPS:
            raise ValueError(f"archiver crash step {crash_at!r} is not one of {', '.join(STEPS)}")
        self.store = store
        #: The archive, or its URL until the first pass opens it (so that importing
        #: pyarrow does not delay ``chatlog serve``'s start).
        self._archive: Archive | str = archive
        self.window = window
        self.segment_events = segment_events
        self.margin_cap = max(margin_cap, 1)
        self.interval = interval
        self.lease_ttl = lease_ttl
        self.crash_at = crash_at
        self.holder = uuid.uuid4().hex
        self._trim_index = store.redis.register_script(TRIM_INDEX)
        self._task: asyncio.Task[None] | None = None
        self.counters = ArchiverCounters()  # for /metrics

    @classmethod
    def from_settings(cls, store: EventStore, settings: Settings) -> Archiver:
        return cls(
            store,
            settings.archive_location,
            HotWindow(settings.hot_events, settings.hot_seconds, settings.hot_bytes),
            segment_events=settings.archive_segment_events,
            interval=settings.archive_interval,
            lease_ttl=settings.archive_lease,
            crash_at=settings.archiver_crash_at,
        )

    @property
    def archive(self) -> Archive:
        if isinstance(self._archive, str):
            from chatlog.eventstore.archive import Archive

            self._archive = Archive.open(self._archive)
        return self._archive

    # -- background ------------------------------------------------------------------

    async def start(self) -> None:
        """Run passes every ``interval`` seconds until :meth:`stop` (none when every
        bound of the hot window is off); after a pass that archived, the next at once."""
        if not self.window.bounded:
            log.info("archiver: every hot-window bound is 0; not archiving")
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="archiver")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            again = False  # a pass that sealed something is followed by one at once: the
            try:           # appends made while it ran may be past the window already
                results = await self.run_pass()
                raise_if_cancelled()
                for result in results:
                    if result.archived or result.trimmed:
                        log.info("archived %d events of partition %d in %d segments",
                                 result.archived, result.partition, result.segments)
                again = any(result.archived for result in results)
            except _RETRYABLE as exc:
                raise_if_cancelled()
                log.warning("archiver: pass failed (%s: %s); next pass in %.0f s",
                            exc.__class__.__name__, exc, self.interval)
            except ChatlogError as exc:
                log.warning("archiver: %s; next pass in %.0f s", exc, self.interval)
            except Exception:  # a bug: say so, and keep the service (and next passes) going
                log.exception("archiver: pass failed; next pass in %.0f s", self.interval)
            raise_if_cancelled()  # redis-py may have swallowed a cancellation
            await asyncio.sleep(0 if again else self.interval)

    # -- one pass ----------------------------------------------------------------------

    async def run_pass(
        self, partitions: Sequence[int] | None = None, *, progress: Progress | None = None
    ) -> list[PassResult]:
        """Archive every partition (or those given) once; what was done to each."""
        wanted = range(self.store.partitions) if partitions is None else partitions
        for p in wanted:
            if not 0 <= p < self.store.partitions:
                raise InvalidInput(
                    f"partition {p} does not exist; this log has partitions "
                    f"0..{self.store.partitions - 1}"
                )
        with self.counters.counting() as count:  # an archive that cannot open fails too
            if isinstance(self._archive, str):
                await asyncio.to_thread(lambda: self.archive)
            return count([await self.archive_partition(p, progress=progress) for p in wanted])

    async def archive_partition(
        self, partition: int, *, progress: Progress | None = None
    ) -> PassResult:
        lease = Lease(self.store, partition, ttl=self.lease_ttl, holder=self.holder)
        if not await lease.acquire():
            return PassResult(partition, skipped="lease held by another archiver")
        try:
            return await self._archive_partition(partition, lease, progress)
        except LeaseLost as exc:
            log.warning("archiver: %s", exc)
            return PassResult(partition, skipped=str(exc))
        finally:
            with contextlib.suppress(Exception):
                await lease.release()

    async def _archive_partition(self, partition: int, lease: Lease,
                                 progress: Progress | None) -> PassResult:
        await finish(self.store, self.archive, partition, self._step)  # also orphans
        newest = self.archive.newest(partition)
        trimmed = await self._recover(partition, newest)
        excess = await self._excess(partition)
        if not excess:
            return PassResult(partition, trimmed=trimmed, skipped="within the hot window")
        count, time_cut = excess
        floor = parse_position(newest) if newest else (0, 0)
        deleted = self.archive.deleted_before(partition)
        if deleted is not None:  # a deletion that has not reached Redis yet: never re-archive
            below = parse_position(deleted)
            floor = max(floor, (below[0], below[1] - 1) if below[1] else (below[0] - 1, 2**63))
        archived = segments = 0
        if progress:
            progress(partition, 0, count)
        # From the stream's first entry: everything up to the newest published
        # position was trimmed above (and is skipped should it still be there).
        async for entries in segments_beyond(self.store, partition, count=count,
                                             time_cut=time_cut, floor=floor,
                                             segment_events=self.segment_events):
            trimmed += await self._seal(partition, entries, lease)
            archived += len(entries)
            segments += 1
            if progress:
                progress(partition, archived, max(count, archived))
        return PassResult(partition, archived=archived, segments=segments, trimmed=trimmed)

    async def _excess(self, partition: int) -> tuple[int, int | None] | None:
        """How many of the stream's oldest events lie beyond the hot window, and the
        age cut (ms) when the age bound is on; None when nothing needs sealing yet.

        A bound triggers a seal once it is exceeded by a tenth (so segments are not
        made of a handful of events; the events bound by at most ``margin_cap``
        events, so a large window does not hold a tenth more in Redis before each
        seal), then seals down to the bound itself.
        """
        w = self.window
        if not w.bounded:
            return None
        key = self.store.keys.log(partition)
        length = int(await self.store.redis.xlen(key))
        if not length:
            return None
        count = 0
        if w.events and length > w.events + max(min(w.events // 10, self.margin_cap), 1):
            count = length - w.events
        if w.bytes:
            used = int(await self.store.redis.memory_usage(key) or 0)
            if used > w.bytes * 1.1:
                count = max(count, math.ceil(length * (used - w.bytes) / used))
        time_cut = None
        if w.seconds:
            first = await self.store.redis.xrange(key, "-", "+", 1)
            first_ms = int(text(first[0][0]).split("-", 1)[0]) if first else 0
            now_ms = int(time.time() * 1000)
            if first and first_ms < now_ms - w.seconds * 1000 * 1.1:
                time_cut = now_ms - int(w.seconds * 1000)
        if not count and time_cut is None:
            return None
        return count, time_cut

    async def _seal(self, partition: int, entries: list[tuple[bytes, list[bytes]]],
                    lease: Lease) -> int:
        """Stage, verify, publish and trim one segment; the entries trimmed from Redis."""
        if not await lease.renew():
            raise LeaseLost(f"partition {partition}: the archiver's lease was lost; "
                            "another archiver goes on")
        staged = await asyncio.to_thread(self.archive.stage, partition, entries,
                                         on_step=self._step)
        if not await lease.renew():
            self.archive.discard(staged)
            raise LeaseLost(f"partition {partition}: the archiver's lease was lost before "
                            "publishing; the segment was discarded")
        try:
            info = await asyncio.to_thread(publish_then_snapshot, self.archive, staged, entries,
                                           fence=lease.token, on_step=self._step)
        except ArchiveConflict as exc:
            raise LeaseLost(str(exc)) from exc
        return await self._trim(partition, info.last, self._aggregates(entries), entries)

    @staticmethod
    def _aggregates(entries: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[bytes]:
        return list(dict.fromkeys([flat[flat.index(b"a") + 1] for _, flat in entries]))

    async def _trim(self, partition: int, last: str, aggregates: Sequence[bytes],
                    entries: Sequence[tuple[bytes, Sequence[bytes]]] | None = None) -> int:
        """Remove the archived events up to ``last`` from Redis: first from the aggregates'
        index lists, then from the stream (a reader never finds an index entry whose
        event is neither in the stream nor published)."""
        ms, seq = parse_position(last)
        keys = self.store.keys
        for i in range(0, len(aggregates), _KEYS_PER_CALL):
            chunk = [keys.aggregate_index(partition, a.decode())
                     for a in aggregates[i : i + _KEYS_PER_CALL]]
            await self._trim_index(keys=chunk, args=[ms, seq])
        await trim_project_indexes(self.store, partition, last, aggregates)
        self._step("index-trimmed")
        removed = int(await self.store.redis.xtrim(keys.log(partition), minid=f"{ms}-{seq + 1}",
                                                   approximate=False))
        self._step("trimmed")
        await seal_ids(self.store, self.archive, partition, last, self._step, entries)
        return removed

    async def _recover(self, partition: int, newest: str | None) -> int:
        """Finish a crashed pass: trim Redis up to the newest published position."""
        if newest is None:
            return 0
        first = await self.store.redis.xrange(self.store.keys.log(partition), "-", "+", 1)
        if not first or parse_position(text(first[0][0])) > parse_position(newest):
            return 0
        last = self.archive.segments(partition)[-1].path
        aggregates = await asyncio.to_thread(self._segment_aggregates, last)
        log.info("archiver: partition %d: finishing a crashed pass to %s", partition, newest)
        return await self._trim(partition, newest, aggregates)

    def _segment_aggregates(self, path: str) -> list[bytes]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        column = pq.read_table(self.archive.storage.open(path), columns=["aggregate"])
        return [a.encode() for a in pc.unique(column.column("aggregate")).to_pylist()]

    def _step(self, step: str) -> None:
        if step == self.crash_at:
            log.error("archiver: exiting at step %r (archiver_crash_at)", step)
            logging.shutdown()
            os._exit(70)
