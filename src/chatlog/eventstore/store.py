"""The event log: atomic appends, reads by position and by aggregate, tails, trimming.

:class:`EventStore` is the one door to the log. What differs between one
server and a cluster is behind :mod:`._topology` (chosen once, at connect);
the group-committed append path is :mod:`._append`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from chatlog.errors import InvalidInput, PartitionMismatch, PositionTrimmed
from chatlog.events import NewEvent, RecordedEvent, aggregate_key
from chatlog.eventstore._append import Appender, AppendResult
from chatlog.eventstore._topology import FlatEntry, RawEntry, connect, topology_of
from chatlog.eventstore.codec import (
    START,
    Cursor,
    decode_entry,
    flat_field,
    flat_fields,
    parse_position,
)
from chatlog.eventstore.connection import UNAVAILABLE, Client, guard, text
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.scripts import TRIM
from chatlog.eventstore.tiers import (
    READ_AGGREGATE_TIERED,
    archive_tier,
    archived_between,
    archived_head,
    archived_versions,
    delete_archived,
    iter_archive,
    last_archived_before,
    needs_archive,
)

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive

__all__ = [
    "LOG_FORMAT",
    "UNAVAILABLE",
    "AppendResult",
    "Client",
    "EventStore",
    "LogInfo",
    "PartitionStatus",
    "StoreStatus",
    "TierStatus",
    "connect",
]

LOG_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class TierStatus:
    """One tier of one partition: ``redis`` (the hot tail) or ``archive`` (segments)."""

    tier: str
    segments: int
    events: int
    bytes: int
    oldest: str | None
    newest: str | None


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    key: str
    #: Entries in the Redis stream (the hot tail).
    length: int
    first_position: str | None
    last_position: str | None
    #: The last position deliberately deleted (None: nothing was).
    horizon: str | None
    #: Per tier: the archive's segments first (when there is an archive), then Redis.
    tiers: list[TierStatus] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events kept in every tier (an event a crash left in both counts twice)."""
        return sum(t.events for t in self.tiers) if self.tiers else self.length


@dataclass(frozen=True, slots=True)
class StoreStatus:
    server: str
    version: str
    url: str
    partitions: list[PartitionStatus] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(p.length for p in self.partitions)

    @property
    def events(self) -> int:
        """Events kept in every tier, every partition."""
        return sum(p.events for p in self.partitions)


@dataclass(frozen=True, slots=True)
class LogInfo:
    """One partition's log as seen from a reader at position ``after``."""

    partition: int
    #: Entries in the stream now.
    length: int
    #: Entries ever added to the stream (``entries-added``; ``length`` on servers
    #: before Redis 7), so trimmed entries still count.
    added: int
    #: The last position (None when the stream is empty).
    head: str | None
    #: The first position after ``after`` (None when the reader is caught up).
    next_position: str | None


class EventStore:
    """An append-only log of events in Redis Streams, ``partitions`` streams wide.

    Concurrent appends are group-committed: appends that arrive while a round
    trip is in flight go to Redis together in the next one, each still
    answered only once Redis has acknowledged it (with ``appendfsync always``,
    once it is on disk).
    """

    def __init__(
        self,
        redis: Client,
        *,
        partitions: int = 1,
        prefix: str = "chatlog",
        idempotency_window: float = 86_400.0,
        url: str = "",
        tail_redis: Client | None = None,
        max_batch: int = 512,
        ack: str = "local",
        ack_replicas: int = 1,
        ack_timeout: float = 2.0,
        ack_fsync: bool = False,
        archive: Archive | None = None,
    ) -> None:
        #: The client for commands the store has no method for (job streams, scripts).
        self.redis = redis
        #: The archive tier (sealed segments of old events), read with Redis as one log.
        self.archive = archive
        self._topology = topology_of(redis, tail_redis)
        #: True on a Redis Cluster (for reports; the store itself never branches on it).
        self.is_cluster = self._topology.is_cluster
        self.partitions = partitions
        self.keys = Keys(prefix)
        self.url = url
        self.idempotency_window_ms = int(idempotency_window * 1000)
        self._appender = Appender(
            self._topology, self.keys, partitions,
            idempotency_window_ms=self.idempotency_window_ms, max_batch=max_batch, ack=ack,
            ack_replicas=ack_replicas, ack_timeout=ack_timeout, ack_fsync=ack_fsync,
        )
        self._trim_script = redis.register_script(TRIM)
        self._read_aggregate_script = redis.register_script(READ_AGGREGATE_TIERED)

    # The acknowledgement policy lives on the append path; these read and set it there.

    @property
    def ack(self) -> str:
        """``local``: acknowledged once the primary has it (fsynced with the embedded
        default); ``replicated``: also once ``ack_replicas`` replicas have it."""
        return self._appender.ack

    @ack.setter
    def ack(self, value: str) -> None:
        self._appender.ack = value

    @property
    def ack_replicas(self) -> int:
        return self._appender.ack_replicas

    @ack_replicas.setter
    def ack_replicas(self, value: int) -> None:
        self._appender.ack_replicas = value

    @property
    def ack_timeout(self) -> float:
        return self._appender.ack_timeout

    @ack_timeout.setter
    def ack_timeout(self, value: float) -> None:
        self._appender.ack_timeout = value

    @property
    def ack_fsync(self) -> bool:
        """With ``replicated``: the replicas must have fsynced it (WAITAOF), not only applied it."""
        return self._appender.ack_fsync

    @ack_fsync.setter
    def ack_fsync(self, value: bool) -> None:
        self._appender.ack_fsync = value

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        partitions: int = 1,
        prefix: str = "chatlog",
        idempotency_window: float = 86_400.0,
        ack: str = "local",
        ack_replicas: int = 1,
        ack_timeout: float = 2.0,
        ack_fsync: bool = False,
        archive: Archive | None = None,
    ) -> EventStore:
        """Connect to ``url`` and open (or create) the log with ``partitions`` partitions.

        ``url`` is ``redis://``, ``rediss://``, ``unix://`` or, for a Redis
        Cluster, ``redis+cluster://host:port[,host:port...]``. With ``archive``
        every read sees the archive's segments and Redis as one log.
        Raises :class:`PartitionMismatch` when the log exists with another count.
        """
        store = cls(
            connect(url),
            partitions=partitions,
            prefix=prefix,
            idempotency_window=idempotency_window,
            url=url,
            tail_redis=connect(url, blocking=True),
            ack=ack,
            ack_replicas=ack_replicas,
            ack_timeout=ack_timeout,
            ack_fsync=ack_fsync,
            archive=archive,
        )
        try:
            await store._topology.initialize()
            await store.ensure_meta()
        except BaseException:
            await store.close()
            raise
        return store

    async def ensure_meta(self) -> None:
        """Record P in the log's metadata, or check it against the recorded one."""
        meta = self.keys.meta
        await guard(self.redis.hsetnx(meta, "partitions", str(self.partitions)))
        await guard(self.redis.hsetnx(meta, "format", LOG_FORMAT))
        await guard(self.redis.hsetnx(meta, "created", str(time.time())))
        recorded = int(await guard(self.redis.hget(meta, "partitions")) or 0)
        if recorded != self.partitions:
            raise PartitionMismatch(
                f"the log at {self.url or 'this server'} (prefix {self.keys.prefix!r}) was "
                f"created with {recorded} partitions, not {self.partitions}; set "
                f"CHATLOG_PARTITIONS={recorded} or use another prefix"
            )

    async def close(self) -> None:
        await self._appender.close()
        await self._topology.close()

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- appending --------------------------------------------------------------

    def partition_of(self, project: Any) -> int:
        return partition_of(project, self.partitions)

    async def append(
        self, events: Sequence[NewEvent], *, expected_version: int | None = None
    ) -> list[AppendResult]:
        """Append events of one aggregate, all or nothing.

        ``expected_version`` (0 = the aggregate must not exist yet) makes the
        append conditional. A batch whose client-supplied ids were all
        appended before returns the original results and writes nothing.
        """
        return await self._appender.append(events, expected_version)

    async def append_one(
        self, event: NewEvent, *, expected_version: int | None = None
    ) -> AppendResult:
        return (await self._appender.append([event], expected_version))[0]

    # -- reading ------------------------------------------------------------------

    async def read(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events of ``partition`` after position ``after``, oldest first, at most ``limit``.

        One log across the tiers: the archive's segments, then Redis (see
        :mod:`.tiers`). ``after`` = ``START`` reads from the first event kept.
        Raises :class:`PositionTrimmed` when ``after`` lies inside history
        deleted with :meth:`trim` (events after it are gone).
        """
        return [
            decode_entry(partition, pos, fields)
            for pos, fields in await self.read_raw(partition, after, limit)
        ]

    async def read_raw(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Like :meth:`read`, but the stream entries undecoded (for bulk consumers)."""
        self._check_partition(partition)
        parse_position(after)
        if self.archive is None:
            return await self._topology.read_checked(self.keys, partition, after, limit)
        hot, first = await self._topology.read_checked_first(
            self.keys, partition, after, limit, flat=False)
        entries: list[tuple[bytes, dict[bytes, bytes]]] = hot
        if not needs_archive(entries, first):
            return entries
        archived = await asyncio.to_thread(
            archived_between, self.archive, partition, after,
            entries[0][0] if entries else None, limit)
        cold = [(pos, flat_fields(flat)) for pos, flat in archived]
        return cold + entries[: limit - len(archived)]

    async def read_flat(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[FlatEntry]:
        """Like :meth:`read_raw`, but each entry's fields as the flat list the server
        sent (``[b"i", id, b"t", type, ...]``): no dict per entry, which was a quarter
        of a log scan's time (the orchestrator's catch-up on start)."""
        self._check_partition(partition)
        parse_position(after)
        if self.archive is None:
            return await self._topology.read_flat_checked(self.keys, partition, after, limit)
        hot, first = await self._topology.read_checked_first(
            self.keys, partition, after, limit, flat=True)
        entries: list[FlatEntry] = hot
        if not needs_archive(entries, first):
            return entries
        archived = await asyncio.to_thread(
            archived_between, self.archive, partition, after,
            entries[0][0] if entries else None, limit)
        return archived + entries[: limit - len(archived)]

    async def scan(self, partition: int, *, chunk: int = 10_000) -> AsyncIterator[Any]:
        """Every event ``partition`` keeps, oldest first, for rebuilds and other full scans:
        the archive's segments as columnar batches (``pyarrow.RecordBatch``, columns
        position, event_id, aggregate, version, type, time, body), then the hot tail
        as lists of up to ``chunk`` entries with flat fields (:meth:`read_flat`).

        The hot tail is read through the tiered read, so events the archiver moves
        meanwhile are still seen once. The next chunk is asked for before this one
        is yielded, so the server reads it while the caller works on this one.
        """
        self._check_partition(partition)
        after = START
        if self.archive is not None:
            batches = iter_archive(self.archive, partition)
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                after = str(batch.column("position")[-1])
                yield batch
        request = asyncio.ensure_future(self.read_flat(partition, after, chunk))
        try:
            while True:
                entries = await request
                if not entries:
                    return
                full = len(entries) >= chunk
                if full:  # the server reads the next chunk while this one is used
                    request = asyncio.ensure_future(
                        self.read_flat(partition, text(entries[-1][0]), chunk))
                    await asyncio.sleep(0)  # let the request go out first
                yield entries
                if not full:
                    return
        finally:
            if not request.done():
                request.cancel()
            await asyncio.gather(request, return_exceptions=True)

    async def scan_flat(
        self, partition: int, *, chunk: int = 10_000
    ) -> AsyncIterator[list[FlatEntry]]:
        """Every entry of ``partition``'s Redis stream (the hot tier only: what the
        archiver seals), oldest first, in chunks of up to ``chunk``, fields as
        :meth:`read_flat` gives them. A scan of the whole log, archive included,
        is :meth:`scan`.

        The next chunk is asked for before this one is yielded, so the server
        reads it while the caller works on this one. Not checked against the
        trim horizon: it starts at the first entry kept.
        """
        self._check_partition(partition)
        key = self.keys.log(partition)
        request = asyncio.ensure_future(self._topology.xrange_flat(key, "-", chunk))
        try:
            while True:
                entries = await request
                if not entries:
                    return
                full = len(entries) >= chunk
                if full:  # the server reads the next chunk while this one is used
                    request = asyncio.ensure_future(
                        self._topology.xrange_flat(key, f"({text(entries[-1][0])}", chunk))
                    await asyncio.sleep(0)  # let the request go out first
                yield entries
                if not full:
                    return
        finally:
            if not request.done():
                request.cancel()
            await asyncio.gather(request, return_exceptions=True)

    async def read_cursor(
        self, cursor: Cursor, limit: int = 1000, partitions: Sequence[int] | None = None
    ) -> tuple[list[RecordedEvent], Cursor]:
        """Events after ``cursor`` in the given partitions (default: all), and the new cursor.

        A cursor inside deleted history raises :class:`PositionTrimmed` naming the
        whole cursor to resume from.
        """
        events: list[RecordedEvent] = []
        for p in partitions if partitions is not None else range(self.partitions):
            if len(events) >= limit:
                break
            try:
                batch = await self.read(p, cursor.positions[p], limit - len(events))
            except PositionTrimmed as exc:
                raise await self.gone(exc, cursor) from None
            if batch:
                cursor = cursor.advanced(p, batch[-1].position)
                events.extend(batch)
        return events, cursor

    async def read_aggregate(
        self,
        project: Any,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int = 1,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """One aggregate's events from ``from_version`` on, in version order.

        Archived versions come from the archive's aggregate index (only the
        row groups holding them are read), the rest from Redis. A version that
        was deliberately deleted raises :class:`PositionTrimmed`.
        """
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        from_version = max(from_version, 1)
        reply = await guard(
            self._read_aggregate_script(
                keys=[self.keys.log(partition), self.keys.aggregate_index(partition, aggregate),
                      self.keys.versions(partition)],
                args=[aggregate, from_version, -1 if limit is None else limit],
            )
        )
        offset, rows = int(reply[0]), reply[1:]
        flats: list[FlatEntry] = []
        if from_version <= offset and (limit is None or limit > 0):
            count = offset - from_version + 1 if limit is None else min(
                limit, offset - from_version + 1)
            if self.archive is not None:
                flats = await asyncio.to_thread(
                    archived_versions, self.archive, partition, aggregate, from_version, count)
            versions = [int(flat_field(flat, b"v")) for _, flat in flats]
            wanted = list(range(from_version, from_version + count))
            if versions != wanted:
                missing = next((w for v, w in zip([*versions, 0], wanted, strict=False)
                                if v != w), from_version)
                raise PositionTrimmed(partition, f"version {missing} of {aggregate}",
                                      await self.horizon(partition) or START)
        for row in rows:
            if len(row) == 1:
                raise PositionTrimmed(partition, text(row[0]), await self.horizon(partition) or "")
            flats.append((row[0], row[1]))
        return [decode_entry(partition, pos, flat_fields(flat)) for pos, flat in flats]

    async def aggregate_version(self, project: Any, aggregate_type: str, aggregate_id: str) -> int:
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        raw = await guard(self.redis.hget(self.keys.versions(partition), aggregate))
        return int(raw or 0)

    async def head(self, partition: int) -> str:
        """The last position of ``partition`` (``0-0`` when empty)."""
        self._check_partition(partition)
        last = await guard(self.redis.xrevrange(self.keys.log(partition), "+", "-", 1))
        return text(last[0][0]) if last else await self._archived_head(partition)

    async def heads(self) -> Cursor:
        """The last position of every partition (either tier)."""
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xrevrange(self.keys.log(p), "+", "-", 1)
        rows = await guard(pipe.execute())
        return Cursor([r[0][0].decode() if r else await self._archived_head(p)
                       for p, r in enumerate(rows)])

    async def _archived_head(self, partition: int) -> str:
        """The head of a partition whose Redis stream is empty: the archive's newest."""
        if self.archive is None:
            return START
        return await asyncio.to_thread(archived_head, self.archive, partition) or START

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise InvalidInput(
                f"partition {partition} does not exist; this log has partitions "
                f"0..{self.partitions - 1}"
            )

    async def horizon(self, partition: int) -> str | None:
        """The last trimmed position of ``partition`` (None when it was never trimmed)."""
        raw = await guard(self._topology.raw_horizon(self.keys, partition))
        return text(raw) if raw else None

    async def oldest_cursor(self, cursor: Cursor) -> Cursor:
        """``cursor`` with every position inside deleted history moved up to its horizon:
        the oldest cursor still available from where ``cursor`` stood."""
        for p, position in enumerate(cursor.positions):
            horizon = await self.horizon(p)
            if horizon is not None and position != START and (
                    parse_position(position) < parse_position(horizon)):
                cursor = cursor.advanced(p, horizon)
        return cursor

    async def gone(self, exc: PositionTrimmed, cursor: Cursor) -> PositionTrimmed:
        """``exc`` naming the whole cursor a reader at ``cursor`` can resume from."""
        return exc.with_cursor(str(await self.oldest_cursor(cursor)))

    async def log_info(self, partition: int, after: str = START) -> LogInfo:
        """How long ``partition``'s log is, and where it stands relative to ``after``
        (for lag reports: how far a reader at ``after`` is behind)."""
        self._check_partition(partition)
        key = self.keys.log(partition)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrevrange(key, "+", "-", 1)
        pipe.xrange(key, f"({after}" if after != START else "-", "+", 1)
        pipe.xlen(key)
        last, first_pending, length = await guard(pipe.execute())
        added = int(length)
        try:
            info: dict[Any, Any] = await guard(self.redis.xinfo_stream(key))
            added = int(info.get("entries-added", info.get(b"entries-added")) or length)
        except rexc.ResponseError:  # no such key, or a server before Redis 7
            pass
        return LogInfo(
            partition=partition,
            length=int(length),
            added=added,
            head=text(last[0][0]) if last else None,
            next_position=text(first_pending[0][0]) if first_pending else None,
        )

    # -- tailing --------------------------------------------------------------------

    async def tail(
        self,
        cursor: Cursor | None = None,
        *,
        partitions: Sequence[int] | None = None,
        block: float = 1.0,
        count: int = 1000,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Yield batches of events after ``cursor`` as they are appended, forever.

        A dropped connection is retried with backoff from the last event
        yielded, so nothing is skipped or repeated. ``on_idle`` is awaited
        whenever a block ends with no events.
        """
        tail = self.tail_raw(cursor, partitions=partitions, block=block, count=count,
                             on_idle=on_idle)
        try:
            async for raw in tail:
                yield [decode_entry(p, pos, fields) for p, pos, fields in raw]
        finally:
            await tail.aclose()  # type: ignore[attr-defined]

    async def tail_raw(
        self,
        cursor: Cursor | None = None,
        *,
        partitions: Sequence[int] | None = None,
        block: float = 1.0,
        count: int = 1000,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[list[RawEntry]]:
        """Like :meth:`tail`, but ``(partition, position, fields)`` undecoded.

        For consumers that want a few event types out of many: they can skip an
        entry by its ``a`` (aggregate) or ``t`` (type) field without paying for
        decoding it. On a cluster, several partitions are tailed one XREAD each,
        and each batch then holds entries of one partition. With an archive, it
        first catches up through the tiered read (a cursor in the archive works).
        """
        cursor = cursor or Cursor.start(self.partitions)
        wanted = list(partitions) if partitions is not None else list(range(self.partitions))
        if self.archive is not None:
            # A cursor may lie in the archive (or before the hot tail's start): catch up
            # through the tiered read first; XREAD only sees what Redis still holds.
            for p in wanted:
                while True:
                    rows = await self.read_raw(p, cursor.positions[p], count)
                    if not rows:
                        break
                    cursor = cursor.advanced(p, text(rows[-1][0]))
                    yield [(p, pos, fields) for pos, fields in rows]
                    if len(rows) < count:
                        break
        tail = self._topology.tail(self.keys, cursor, wanted, block=block, count=count,
                                   on_idle=on_idle)
        try:
            async for batch in tail:
                if self.archive is not None:
                    batch = await self._archived_under(cursor, batch, count)
                    positions = list(cursor.positions)
                    for p, pos, _ in batch:
                        positions[p] = text(pos)
                    cursor = Cursor(positions)
                yield batch
        finally:
            await tail.aclose()  # type: ignore[attr-defined]

    async def _archived_under(self, cursor: Cursor, batch: list[RawEntry],
                              count: int) -> list[RawEntry]:
        """``batch`` (from XREAD after ``cursor``) preceded by the events the archiver moved
        out of Redis before the XREAD read them (a tail a whole hot window behind).

        The stream's first position ``F`` is read after the XREAD: if ``F`` comes
        before a partition's first entry ``e0``, ``F`` was there when XREAD ran
        (entries leave from the head only), so nothing between the cursor and
        ``e0`` was archived. Otherwise the archive is read for that range.
        """
        assert self.archive is not None
        firsts: dict[int, bytes] = {}
        for p, pos, _ in batch:
            firsts.setdefault(p, pos)
        pipe = self.redis.pipeline(transaction=False)
        for p in firsts:
            pipe.xrange(self.keys.log(p), "-", "+", 1)
        heads = await guard(pipe.execute())
        missed: list[RawEntry] = []
        for (p, e0), head in zip(firsts.items(), heads, strict=True):
            if head and parse_position(text(head[0][0])) < parse_position(text(e0)):
                continue
            after = cursor.positions[p]
            while True:
                page = await asyncio.to_thread(
                    archived_between, self.archive, p, after, e0, count)
                missed.extend((p, pos, flat_fields(flat)) for pos, flat in page)
                if len(page) < count:
                    break
                after = text(page[-1][0])
        return missed + batch if missed else batch

    # -- retention -------------------------------------------------------------------

    async def trim(self, partition: int, before: str) -> int:
        """Delete the events of ``partition`` before position ``before`` from every tier
        (the archive's segments, then Redis); return how many.

        The deletion horizon (the last position deleted) is recorded first, so a
        crash halfway leaves cursors into the deleted history answered
        :class:`PositionTrimmed`, never a silent gap; running it again finishes
        the job. Reads without a cursor then start at the first event kept.
        No archiver may run on the partition meanwhile (see docs/archive.md).
        """
        self._check_partition(partition)
        parse_position(before)
        removed = 0
        if self.archive is not None:
            last = await self._last_before(partition, before)
            if last is not None:
                current = await self.horizon(partition)
                if current is None or parse_position(current) < parse_position(last):
                    await guard(self.redis.set(self.keys.horizon(partition), last))
            removed += await asyncio.to_thread(delete_archived, self.archive, partition, before)
        trimmed, _ = await guard(
            self._trim_script(
                keys=[self.keys.log(partition), self.keys.horizon(partition)], args=[before]
            )
        )
        return removed + int(trimmed)

    async def _last_before(self, partition: int, before: str) -> str | None:
        """The last position before ``before`` in either tier (None: there is none)."""
        row = await guard(self.redis.xrevrange(self.keys.log(partition), f"({before}", "-", 1))
        if row:
            return text(row[0][0])
        assert self.archive is not None
        return await asyncio.to_thread(last_archived_before, self.archive, partition, before)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> StoreStatus:
        info = await self._topology.server_info()
        server = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("valkey_version") or info.get("redis_version", "?"))
        parts = []
        for p in range(self.partitions):
            pipe = self.redis.pipeline(transaction=False)
            key = self.keys.log(p)
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", 1)
            pipe.xrevrange(key, "+", "-", 1)
            pipe.get(self.keys.horizon(p))
            pipe.memory_usage(key)
            length, first, last, horizon, size = await guard(pipe.execute())
            oldest = text(first[0][0]) if first else None
            newest = text(last[0][0]) if last else None
            tiers = [TierStatus("redis", 0, int(length), int(size or 0), oldest, newest)]
            if self.archive is not None:
                tiers.insert(0, TierStatus(
                    "archive", *await asyncio.to_thread(archive_tier, self.archive, p)))
            parts.append(
                PartitionStatus(
                    partition=p,
                    key=key,
                    length=int(length),
                    first_position=oldest,
                    last_position=newest,
                    horizon=text(horizon) if horizon else None,
                    tiers=tiers,
                )
            )
        return StoreStatus(server=server, version=version, url=self.url, partitions=parts)


    async def placement(self) -> dict[str, Any]:
        """Which node serves each partition now (``{}`` on one server), for ``chatlog status``."""
        return await self._topology.placement(self.keys, self.partitions)
