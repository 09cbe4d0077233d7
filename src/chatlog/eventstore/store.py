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
from typing import Any

from redis import exceptions as rexc

from chatlog.errors import InvalidInput, PartitionMismatch, PositionTrimmed
from chatlog.events import NewEvent, RecordedEvent, aggregate_key
from chatlog.eventstore._append import Appender, AppendResult
from chatlog.eventstore._topology import FlatEntry, RawEntry, connect, topology_of
from chatlog.eventstore.codec import START, Cursor, decode_entry, flat_fields, parse_position
from chatlog.eventstore.connection import UNAVAILABLE, Client, guard, text
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.scripts import READ_AGGREGATE, TRIM

__all__ = [
    "LOG_FORMAT",
    "UNAVAILABLE",
    "AppendResult",
    "Client",
    "EventStore",
    "LogInfo",
    "PartitionStatus",
    "StoreStatus",
    "connect",
]

LOG_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    key: str
    length: int
    first_position: str | None
    last_position: str | None
    horizon: str | None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    server: str
    version: str
    url: str
    partitions: list[PartitionStatus] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(p.length for p in self.partitions)


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
    ) -> None:
        #: The client for commands the store has no method for (job streams, scripts).
        self.redis = redis
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
        self._read_aggregate_script = redis.register_script(READ_AGGREGATE)

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
    ) -> EventStore:
        """Connect to ``url`` and open (or create) the log with ``partitions`` partitions.

        ``url`` is ``redis://``, ``rediss://``, ``unix://`` or, for a Redis
        Cluster, ``redis+cluster://host:port[,host:port...]``.
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
        return await self._topology.read_checked(self.keys, partition, after, limit)

    async def read_flat(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[FlatEntry]:
        """Like :meth:`read_raw`, but each entry's fields as the flat list the server
        sent (``[b"i", id, b"t", type, ...]``): no dict per entry, which was a quarter
        of a log scan's time (the orchestrator's catch-up on start)."""
        self._check_partition(partition)
        parse_position(after)
        return await self._topology.read_flat_checked(self.keys, partition, after, limit)

    async def scan_flat(
        self, partition: int, *, chunk: int = 10_000
    ) -> AsyncIterator[list[FlatEntry]]:
        """Every entry ``partition`` keeps, oldest first, in chunks of up to ``chunk``,
        fields as :meth:`read_flat` gives them (for rebuilds and other full scans).

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
        """Events after ``cursor`` in the given partitions (default: all), and the new cursor."""
        events: list[RecordedEvent] = []
        for p in partitions if partitions is not None else range(self.partitions):
            if len(events) >= limit:
                break
            batch = await self.read(p, cursor.positions[p], limit - len(events))
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
        """One aggregate's events from ``from_version`` on, in version order."""
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        start = max(from_version, 1) - 1
        stop = -1 if limit is None else start + limit - 1
        rows = await guard(
            self._read_aggregate_script(
                keys=[self.keys.log(partition), self.keys.aggregate_index(partition, aggregate)],
                args=[start, stop],
            )
        )
        events = []
        for row in rows:
            if len(row) == 1:
                raise PositionTrimmed(partition, text(row[0]), await self.horizon(partition) or "")
            pos, flat = row
            events.append(decode_entry(partition, pos, flat_fields(flat)))
        return events

    async def aggregate_version(self, project: Any, aggregate_type: str, aggregate_id: str) -> int:
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        raw = await guard(self.redis.hget(self.keys.versions(partition), aggregate))
        return int(raw or 0)

    async def head(self, partition: int) -> str:
        """The last position of ``partition`` (``0-0`` when empty)."""
        self._check_partition(partition)
        last = await guard(self.redis.xrevrange(self.keys.log(partition), "+", "-", 1))
        return text(last[0][0]) if last else START

    async def heads(self) -> Cursor:
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xrevrange(self.keys.log(p), "+", "-", 1)
        rows = await guard(pipe.execute())
        return Cursor([r[0][0].decode() if r else START for r in rows])

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
        and each batch then holds entries of one partition.
        """
        cursor = cursor or Cursor.start(self.partitions)
        wanted = list(partitions) if partitions is not None else list(range(self.partitions))
        tail = self._topology.tail(self.keys, cursor, wanted, block=block, count=count,
                                   on_idle=on_idle)
        try:
            async for batch in tail:
                yield batch
        finally:
            await tail.aclose()  # type: ignore[attr-defined]

    # -- retention -------------------------------------------------------------------

    async def trim(self, partition: int, before: str) -> int:
        """Remove the events of ``partition`` before position ``before``; return how many.

        Readers asking for a removed position then get :class:`PositionTrimmed`.
        """
        self._check_partition(partition)
        parse_position(before)
        removed, _ = await guard(
            self._trim_script(
                keys=[self.keys.log(partition), self.keys.horizon(partition)], args=[before]
            )
        )
        return int(removed)

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
            length, first, last, horizon = await guard(pipe.execute())
            parts.append(
                PartitionStatus(
                    partition=p,
                    key=key,
                    length=int(length),
                    first_position=text(first[0][0]) if first else None,
                    last_position=text(last[0][0]) if last else None,
                    horizon=text(horizon) if horizon else None,
                )
            )
        return StoreStatus(server=server, version=version, url=self.url, partitions=parts)


    async def placement(self) -> dict[str, Any]:
        """Which node serves each partition now (``{}`` on one server), for ``chatlog status``."""
        return await self._topology.placement(self.keys, self.partitions)
