"""The event log: atomic appends, reads by position and by aggregate, tails, trimming.

:class:`EventStore` is the one door to the log. What differs between one server and
a cluster is behind :mod:`._topology` (chosen once, at connect); the group-committed
append path is :mod:`._append`; reading the archive and Redis as one log, :mod:`.tiers`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from chatlog.errors import InvalidInput, InvalidPosition, PartitionMismatch, PositionTrimmed
from chatlog.events import NewEvent, RecordedEvent, aggregate_key
from chatlog.eventstore import _status, _watermark, codec, idempotency, tiers
from chatlog.eventstore._append import Appender
from chatlog.eventstore._append_args import AppendResult
from chatlog.eventstore._status import LogInfo, PartitionStatus, StoreStatus, TierStatus
from chatlog.eventstore._topology import FlatEntry, RawEntry, connect, topology_of
from chatlog.eventstore.codec import START, Cursor, decode_entry, flat_fields, parse_position
from chatlog.eventstore.connection import UNAVAILABLE, Client, guard, text
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.project_index import build_project_index, trim_project_indexes_before
from chatlog.eventstore.replication import confirm_heads
from chatlog.eventstore.scripts import TRIM

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
        outcome_window: float = 600.0, outcome_timeout: float = 5.0,
        url: str = "",
        tail_redis: Client | None = None,
        max_batch: int = 512,
        ack: str = "local",
        ack_replicas: int = 1,
        ack_timeout: float = 2.0,
        ack_fsync: bool = False,
        archive: Archive | str | None = None,
    ) -> None:
        #: The client for commands the store has no method for (job streams, scripts).
        self.redis = redis
        self._archive: Archive | None = None if isinstance(archive, str) else archive
        self._archive_dir: str | None = archive if isinstance(archive, str) else None
        self._topology = topology_of(redis, tail_redis)
        #: True on a Redis Cluster (for reports; the store itself never branches on it).
        self.is_cluster = self._topology.is_cluster
        self.partitions = partitions
        self.keys = Keys(prefix)
        self.url = url
        self.idempotency_window_ms = int(idempotency_window * 1000)
        self._appender = Appender(
            self._topology, self.keys, partitions, archive_of=lambda: self.archive,
            idempotency_window_ms=self.idempotency_window_ms, max_batch=max_batch, ack=ack,
            outcome_window_ms=int(outcome_window * 1000), outcome_timeout=outcome_timeout,
            ack_replicas=ack_replicas, ack_timeout=ack_timeout, ack_fsync=ack_fsync,
        )
        self._topology.committed_only = ack == "replicated"
        self._trim_script = redis.register_script(TRIM)
        self._read_aggregate_script = redis.register_script(tiers.READ_AGGREGATE_TIERED)

    @property
    def archive(self) -> Archive | None:
        """The archive tier, read with Redis as one log (None: nothing archived here)."""
        if self._archive is None and self._archive_dir is not None:
            self._archive = tiers.archive_if_there(self._archive_dir)
        return self._archive

    @archive.setter
    def archive(self, archive: Archive | None) -> None:
        self._archive, self._archive_dir = archive, None

    # The acknowledgement policy lives on the append path; these read and set it there.

    @property
    def ack(self) -> str:
        """``local``: acknowledged once the primary has it (fsynced with the embedded
        default); ``replicated``: also once ``ack_replicas`` replicas have it."""
        return self._appender.ack

    @ack.setter
    def ack(self, value: str) -> None:
        self._appender.ack = value
        self._topology.committed_only = value == "replicated"

    @property
    def committed_only(self) -> bool:
        """True when readers see only entries at or before each partition's committed
        position (``ack=replicated``)."""
        return self._topology.committed_only

    async def committed(self) -> Cursor:
        """Each partition's committed position (its replicated high watermark)."""
        return Cursor(await self._topology.committed(self.keys, range(self.partitions)))

    async def confirm_committed(self) -> Cursor:
        """Under ``ack=replicated``: move each partition's committed position to its head
        if replicated (fence + WAIT per node), for what no append confirmed (a log
        written under ``ack=local``, a migrated copy); run at open. The positions."""
        if self._topology.committed_only:
            await guard(confirm_heads(
                self.redis, [self.keys.log(p) for p in range(self.partitions)],
                self.ack_replicas, self.ack_timeout, self.ack_fsync,
                self._topology.node_groups))
        return await self.committed()

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
        outcome_window: float = 600.0, outcome_timeout: float = 5.0,
        ack: str = "local",
        ack_replicas: int = 1,
        ack_timeout: float = 2.0,
        ack_fsync: bool = False,
        archive: Archive | str | None = None,
    ) -> EventStore:
        """Connect to ``url`` and open (or create) the log with ``partitions`` partitions.

        ``url`` is ``redis://``, ``rediss://``, ``unix://`` or, for a Redis
        Cluster, ``redis+cluster://host:port[,host:port...]``; ``archive``: the archive
        tier (or a local directory, opened once it exists). Raises
        :class:`PartitionMismatch` when the log exists with another count.
        """
        store = cls(
            connect(url),
            partitions=partitions,
            prefix=prefix,
            idempotency_window=idempotency_window,
            outcome_window=outcome_window, outcome_timeout=outcome_timeout,
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
            if store.committed_only:
                await store.confirm_committed()
        except BaseException:
            await store.close()
            raise
        return store

    async def ensure_meta(self) -> None:
        """Record P in the log's metadata, or check it against the recorded one."""
        meta = self.keys.meta
        self._appender.legacy_ids_until = await idempotency.legacy_ids_until(self)
        if await guard(self.redis.hsetnx(meta, "partitions", str(self.partitions))):
            await guard(self.redis.hsetnx(meta, "project_index", "1"))  # a new log: all indexed
        await guard(self.redis.hsetnx(meta, "format", LOG_FORMAT))
        await guard(self.redis.hsetnx(meta, "created", str(time.time())))
        recorded = int(await guard(self.redis.hget(meta, "partitions")) or 0)
        if recorded != self.partitions:
            raise PartitionMismatch(
                f"the log at {self.url or 'this server'} (prefix {self.keys.prefix!r}) was "
                f"created with {recorded} partitions, not {self.partitions}; set "
                f"CHATLOG_PARTITIONS={recorded} or use another prefix"
            )
        if not await guard(self.redis.hexists(meta, "project_index")):
            await build_project_index(self)  # a log from before the index: built once

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

    async def append(self, events: Sequence[NewEvent], *, expected_version: int | None = None,
                     digests: Sequence[str] | None = None) -> list[AppendResult]:
        """Append events of one aggregate, all or nothing, deduplicated by (project, event
        id); ``expected_version``, ``digests``, and what StoreUnavailable (nothing written)
        and OutcomeUnknown (retry with the same ids) mean: :meth:`Appender.append`."""
        return await self._appender.append(events, expected_version, digests)

    async def append_one(self, event: NewEvent, *, expected_version: int | None = None,
                         digest: str | None = None) -> AppendResult:
        digests = None if digest is None else [digest]
        return (await self._appender.append([event], expected_version, digests))[0]

    # -- reading ------------------------------------------------------------------

    async def read(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events of ``partition`` after position ``after``, oldest first, at most ``limit``.

        Raises :class:`PositionTrimmed` when events after ``after`` were trimmed.
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
        return await tiers.read_both(self._topology, self.keys, self.archive, partition,
                                     after,
                               limit, flat=False)

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
        return await tiers.read_both(self._topology, self.keys, self.archive, partition,
                                     after,
                               limit, flat=True)

    def scan(self, partition: int, *, chunk: int = 10_000) -> AsyncIterator[Any]:
        """Every event ``partition`` keeps, oldest first (rebuilds, full scans): the
        archive's segments as ``pyarrow.RecordBatch``es, then the hot tail in lists of
        up to ``chunk`` flat entries through :meth:`read_flat` (see :mod:`.tiers`)."""
        self._check_partition(partition)
        return tiers.scan_both(self.archive, partition, chunk, self.read_flat)

    def scan_flat(self, partition: int, *, chunk: int = 10_000) -> AsyncIterator[list[FlatEntry]]:
        """Every entry of ``partition``'s Redis stream (the hot tier the archiver seals),
        oldest first, in flat chunks of up to ``chunk``, the next one asked for before
        this one is yielded; unchecked against the horizon. The whole log is :meth:`scan`.
        """
        self._check_partition(partition)
        return tiers.scan_hot(self._topology, self.keys, partition, chunk)

    async def read_cursor(
        self, cursor: Cursor, limit: int = 1000, partitions: Sequence[int] | None = None
    ) -> tuple[list[RecordedEvent], Cursor]:
        """Events after ``cursor`` in the given partitions (default: all), and the new cursor."""
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
        limit: int | None = None, decode: codec.EntryDecoder = codec.decode_here,
    ) -> list[RecordedEvent]:
        """One aggregate's events from ``from_version`` on, in version order (each entry
        turned into an event by ``decode``): archived versions through the archive's
        aggregate index, the rest from Redis; a deleted version raises PositionTrimmed."""
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        upto = None
        if self._topology.committed_only:
            upto = parse_position((await self._topology.committed(self.keys, [partition]))[0])
        flats = await tiers.read_versions(
            self._read_aggregate_script, self.keys, self.archive, partition, aggregate,
            max(from_version, 1), limit, lambda: self.horizon(partition))
        events = []
        for pos, flat in flats:
            if upto is not None and parse_position(text(pos)) > upto:
                break  # not replicated (yet): the rest of the aggregate comes after it
            events.append(await decode(partition, pos, flat_fields(flat)))
        return events

    async def aggregate_version(self, project: Any, aggregate_type: str, aggregate_id: str) -> int:
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        raw = await guard(self.redis.hget(self.keys.versions(partition), aggregate))
        return int(raw or 0)

    async def head(self, partition: int) -> str:
        """The last position of ``partition`` (``0-0`` when empty)."""
        self._check_partition(partition)
        return (await self._heads([partition]))[0]

    async def heads(self) -> Cursor:
        """The last position of every partition (under ``ack=replicated``: the last
        committed one, which is as far as readers go)."""
        return Cursor(await self._heads(range(self.partitions)))

    async def _heads(self, partitions: Sequence[int]) -> list[str]:
        heads: list[str] = await guard(_watermark.heads(self.redis, self.keys, partitions,
                                                        self._topology.committed_only))
        if self.archive is None:
            return heads
        return [h if h != START else await tiers.archived_head(self.archive, p)  # Redis empty
                for p, h in zip(partitions, heads, strict=True)]

    async def missing(self, cursor: Cursor, partitions: Sequence[int] | None = None) -> list[int]:
        """The partitions whose position in ``cursor`` the log no longer holds: a failover
        promoted a replica that never got it, or the server was restored from an older
        snapshot (see :func:`._watermark.missing`)."""
        wanted = [p for p in (partitions if partitions is not None else range(self.partitions))
                  if cursor.positions[p] != START]
        gone = await guard(_watermark.missing(self.redis, self.keys, cursor, wanted))
        if gone and self.archive is not None:  # sealed, then trimmed from Redis: kept
            gone = await tiers.not_archived(self.archive, cursor, gone)
        return gone

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

    async def gone(self, exc: PositionTrimmed, cursor: Cursor) -> PositionTrimmed:
        """``exc`` naming the whole cursor a reader at ``cursor`` can resume from."""
        return exc.with_cursor(str(await tiers.oldest_cursor(cursor, self.horizon)))

    async def log_info(self, partition: int, after: str = START) -> LogInfo:
        """``partition``'s log in both tiers, and where a reader at ``after`` stands (lag)."""
        self._check_partition(partition)
        return await _status.read_log_info(self.redis, self._topology, self.keys, partition,
                                           after, self.archive)

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
        and each batch then holds entries of one partition.
        """
        cursor = cursor or Cursor.start(self.partitions)
        wanted = list(partitions) if partitions is not None else list(range(self.partitions))
        if self.archive is not None:  # catch up across tiers first (see tiers.tail_both)
            tail = tiers.tail_both(self._topology, self.keys, self.archive, self.read_raw,
                                   cursor,
                             wanted, block=block, count=count, on_idle=on_idle)
        else:
            tail = self._topology.tail(self.keys, cursor, wanted, block=block, count=count,
                                       on_idle=on_idle)
        try:
            async for batch in tail:
                yield batch
        finally:
            await tail.aclose()  # type: ignore[attr-defined]

    # -- retention -------------------------------------------------------------------

    async def trim(self, partition: int, before: str) -> int:
        """Delete ``partition``'s events before ``before`` from every tier; how many.

        The horizon (last position deleted) is recorded first: a crash halfway leaves
        the deleted cursors gone (:class:`PositionTrimmed`), never a silent gap; running
        it again finishes the job. No archiver may run meanwhile (docs/retention.md).
        """
        self._check_partition(partition)
        if (cut := parse_position(before)) == (0, 0) or max(cut) > codec.MAX_ID:
            raise InvalidPosition(f"{before} is no position of a stream: nothing to delete")
        removed = 0 if self.archive is None else await tiers.delete_both(
            self.redis, self.keys, self.archive, partition, before)
        trimmed, _ = await guard(
            self._trim_script(
                keys=[self.keys.log(partition), self.keys.horizon(partition)], args=[before]
            )
        )
        await trim_project_indexes_before(self, partition, before)
        return removed + int(trimmed)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> StoreStatus:
        """The server, and per partition and tier: segments, events, bytes, oldest, newest."""
        return await _status.read_status(self.redis, self._topology, self.keys, self.partitions,
                                 self.url, self.archive)

    async def placement(self) -> dict[str, Any]:
        """Which node serves each partition now (``{}`` on one server), for ``chatlog status``."""
        return await self._topology.placement(self.keys, self.partitions)
