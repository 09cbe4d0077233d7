"""The event log: atomic appends, reads by position and by aggregate, tails, trimming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol, TypeAlias, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatlog.errors import (
    IdempotencyConflict,
    InvalidInput,
    PartitionMismatch,
    PositionTrimmed,
    StoreUnavailable,
    VersionConflict,
)
from chatlog.events import NewEvent, RecordedEvent, aggregate_key
from chatlog.eventstore import cluster as _cluster
from chatlog.eventstore.codec import (
    START,
    Cursor,
    decode_entry,
    encode_body,
    flat_fields,
    parse_position,
)
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.packing import hiredis_packing
from chatlog.eventstore.replication import run_replicated
from chatlog.eventstore.scripts import (
    APPEND_MANY,
    APPEND_ONE,
    READ_AGGREGATE,
    TRIM,
    raise_if_cancelled,
    stream_items,
    text,
)

log = logging.getLogger(__name__)

LOG_FORMAT = "1"
#: Errors that mean "Redis is not there right now"; nothing was written.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    *_cluster.CLUSTER_UNAVAILABLE,
)
#: A client for one server or for a cluster (``redis+cluster://``).
Client: TypeAlias = aioredis.Redis | RedisCluster
T = TypeVar("T")

class AppendObserver(Protocol):
    """What the store reports about its appends (the metrics implement it)."""

    def appended(self, seconds: float) -> None:
        """An append (one aggregate's batch) was acknowledged after ``seconds``."""

    def committed(self, group_size: int) -> None:
        """``group_size`` appends went to the server in one round trip."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What the log assigned to one appended event."""

    event_id: str
    partition: int
    position: str
    version: int
    #: True when the event id was appended before: nothing new was written.
    duplicate: bool = False


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


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"event store unavailable: {exc.__class__.__name__}: {exc}")


async def _guard(call: Awaitable[T]) -> T:
    """Await a Redis call, turning connection trouble into StoreUnavailable.

    A cancellation that redis-py swallowed (the call returned normally) is
    raised again: a caller polling in a loop would otherwise never stop (seen:
    a lag sampler that ran on after its task was cancelled).
    """
    try:
        result = await call
    except UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    raise_if_cancelled()
    return result


def _unparsed(response: Any, **options: Any) -> Any:
    return response


class _Pending:
    __slots__ = ("args", "future", "keys")

    def __init__(self, keys: list[str], args: list[Any], future: asyncio.Future[Any]) -> None:
        self.keys = keys
        self.args = args
        self.future = future


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
        self.redis = redis
        self.is_cluster = isinstance(redis, RedisCluster)
        #: ``local``: acknowledged once the primary has it (fsynced with the embedded
        #: default); ``replicated``: also once ``ack_replicas`` replicas have it.
        self.ack = ack
        self.ack_replicas = ack_replicas
        self.ack_timeout = ack_timeout
        #: With ``replicated``: the replicas must have fsynced it (WAITAOF), not only applied it.
        self.ack_fsync = ack_fsync
        self.partitions = partitions
        self.keys = Keys(prefix)
        self.url = url
        self.idempotency_window_ms = int(idempotency_window * 1000)
        self._tail_redis = tail_redis
        #: A client on the same connections whose XRANGE replies stay unparsed.
        self._flat_redis: aioredis.Redis | None = None
        self._max_batch = max_batch
        lib = resources.files("chatlog.eventstore").joinpath("append.lua").read_text()
        self._append_script = redis.register_script(lib + APPEND_ONE)
        self._append_many_script = redis.register_script(lib + APPEND_MANY)
        self._trim_script = redis.register_script(TRIM)
        self._read_aggregate_script = redis.register_script(READ_AGGREGATE)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline = False  # an append is in flight from its caller's task
        self._closed = False
        #: Told about every acknowledged append and group commit (None: nobody listens).
        self.observer: AppendObserver | None = None

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
        redis = connect(url)
        tail = connect(url, blocking=True)
        store = cls(
            redis,
            partitions=partitions,
            prefix=prefix,
            idempotency_window=idempotency_window,
            url=url,
            tail_redis=tail,
            ack=ack,
            ack_replicas=ack_replicas,
            ack_timeout=ack_timeout,
            ack_fsync=ack_fsync,
        )
        try:
            await _cluster.initialize(redis, tail)
            await store.ensure_meta()
        except BaseException:
            await store.close()
            raise
        return store

    async def ensure_meta(self) -> None:
        """Record P in the log's metadata, or check it against the recorded one."""
        meta = self.keys.meta
        await _guard(self.redis.hsetnx(meta, "partitions", str(self.partitions)))
        await _guard(self.redis.hsetnx(meta, "format", LOG_FORMAT))
        await _guard(self.redis.hsetnx(meta, "created", str(time.time())))
        recorded = int(await _guard(self.redis.hget(meta, "partitions")) or 0)
        if recorded != self.partitions:
            raise PartitionMismatch(
                f"the log at {self.url or 'this server'} (prefix {self.keys.prefix!r}) was "
                f"created with {recorded} partitions, not {self.partitions}; set "
                f"CHATLOG_PARTITIONS={recorded} or use another prefix"
            )

    async def close(self) -> None:
        self._closed = True
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await _cluster.close_client(self.redis)
        if self._tail_redis is not None:
            await _cluster.close_client(self._tail_redis)

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
        if not events:
            return []
        first = events[0]
        aggregate = first.aggregate
        ident = (first.project, first.aggregate_type, first.aggregate_id)
        for ev in events[1:]:
            if (ev.project, ev.aggregate_type, ev.aggregate_id) != ident:
                raise InvalidInput(
                    f"a batch appends to one aggregate; got {aggregate} and {ev.aggregate}"
                )
        if expected_version is not None and expected_version < 0:
            raise InvalidInput(f"expected_version must be 0 or more, not {expected_version}")
        started = time.perf_counter()
        partition = self.partition_of(first.project)
        log_key = self.keys.log(partition)
        keys = [
            log_key,
            self.keys.versions(partition),
            self.keys.aggregate_index(partition, aggregate),
        ]
        args: list[Any] = [
            aggregate,
            -1 if expected_version is None else expected_version,
            self.idempotency_window_ms,
            len(events),
        ]
        ids = [str(ev.id) for ev in events]
        for ev, event_id in zip(events, ids, strict=True):
            # The script reads an event's id key only for a client-chosen id; for the
            # others any key of the partition's slot will do, and costs nothing to build.
            keys.append(self.keys.event_id(partition, ev.id) if ev.id_supplied else log_key)
            args.extend((event_id, "1" if ev.id_supplied else "0", ev.type, encode_body(ev)))
        reply = await self._submit(keys, args)
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if status == "conflict":
            assert expected_version is not None
            raise VersionConflict(aggregate, expected_version, int(reply[1]))
        if status == "partial":
            raise IdempotencyConflict(
                f"event {events[int(reply[1]) - 1].id} of this batch was not appended before "
                "but others were; retry the whole batch with the ids it had, or new ids"
            )
        duplicate = status == "dup"
        if self.observer is not None:
            self.observer.appended(time.perf_counter() - started)
        return [
            AppendResult(
                event_id=event_id,
                partition=partition,
                position=reply[1 + 2 * i].decode(),
                version=int(reply[2 + 2 * i]),
                duplicate=duplicate,
            )
            for i, event_id in enumerate(ids)
        ]

    async def append_one(
        self, event: NewEvent, *, expected_version: int | None = None
    ) -> AppendResult:
        return (await self.append([event], expected_version=expected_version))[0]

    async def _submit(self, keys: list[str], args: list[Any]) -> Any:
        if self._closed:
            raise StoreUnavailable("event store is closed")
        if not self._inline and not self._pending and (
            self._flusher is None or self._flusher.done()
        ):
            return await self._submit_inline(keys, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(keys, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _submit_inline(self, keys: list[str], args: list[Any]) -> Any:
        """Nothing in flight: send this append from the caller's task (no task, no future).

        Appends that arrive meanwhile queue up and go together once it is answered.
        """
        self._inline = True
        try:
            # As in _flush: let the loop deliver pending socket events first, so a pooled
            # connection whose server died is seen at EOF and replaced. (One turn runs the
            # tasks already ready; the events polled in it are handled in the next.)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            unused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            reply = (await self._run_scripts([_Pending(keys, args, unused)]))[0]
        except UNAVAILABLE as exc:
            await self._after_unavailable()
            raise _unavailable(exc) from exc
        finally:
            self._inline = False
            if self._pending and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
        if isinstance(reply, BaseException):
            raise _unavailable(reply) if isinstance(reply, UNAVAILABLE) else reply
        return reply

    async def _after_unavailable(self) -> None:
        if isinstance(self.redis, RedisCluster):
            await _cluster.refresh_topology(self.redis)
        else:
            with contextlib.suppress(Exception):
                await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def _flush(self) -> None:
        # Let the loop deliver pending socket events first: a pooled connection
        # whose server died is then seen at EOF and replaced, instead of failing
        # the append that happens to pick it up.
        await asyncio.sleep(0)
        while self._pending:
            batch = self._pending[: self._max_batch]
            self._pending = self._pending[self._max_batch :]
            try:
                replies = await self._run_scripts(batch)
            except UNAVAILABLE as exc:
                err = _unavailable(exc)
                await self._after_unavailable()
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            except BaseException as exc:  # pragma: no cover - a bug, surfaced to callers
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for p, reply in zip(batch, replies, strict=True):
                if p.future.done():
                    continue
                if isinstance(reply, BaseException):
                    p.future.set_exception(
                        _unavailable(reply) if isinstance(reply, UNAVAILABLE) else reply
                    )
                else:
                    p.future.set_result(reply)

    async def _run_scripts(self, batch: list[_Pending]) -> list[Any]:
        script = self._append_script
        if self.observer is not None:
            self.observer.committed(len(batch))
        if self.ack == "replicated":
            return await run_replicated(
                self.redis, script, batch, self.ack_replicas, self.ack_timeout,  # type: ignore[arg-type]
                self.ack_fsync,
            )
        if len(batch) == 1:
            p = batch[0]
            try:
                return [await script(keys=p.keys, args=p.args)]
            except rexc.ResponseError as exc:
                return [exc]
        return await self._run_grouped(batch)

    async def _run_grouped(self, batch: list[_Pending]) -> list[Any]:
        """A group commit as one ``APPEND_MANY`` call per partition, not one per append.

        Each append stays all-or-nothing and independent of the others; the
        server runs one script instead of hundreds and the client packs and
        parses one command and one reply.
        """
        script = self._append_many_script
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(batch):
            groups.setdefault(p.keys[0], []).append(i)
        calls: list[tuple[list[int], list[Any]]] = []
        for log_key, members in groups.items():
            keys: list[Any] = [log_key, batch[members[0]].keys[1]]
            args: list[Any] = [batch[members[0]].args[2], len(members)]
            for i in members:
                p = batch[i]
                keys.extend(p.keys[2:])
                args.extend((p.args[0], p.args[1], *p.args[3:]))
            calls.append((members, [len(keys), *keys, *args]))
        replies: list[Any] = [None] * len(batch)
        todo = calls
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for _, command in todo:
                pipe.execute_command("EVALSHA", script.sha, *command)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            again = []
            for (members, command), result in zip(todo, results, strict=True):
                if attempt == 1 and isinstance(result, rexc.NoScriptError):
                    again.append((members, command))  # the server forgot it; nothing ran
                    continue
                if isinstance(result, BaseException):
                    for i in members:
                        replies[i] = result
                    continue
                j = 0
                for i in members:  # per append: status, count c, then c values
                    count = int(result[j + 1])
                    reply = [result[j], *result[j + 2 : j + 2 + count]]
                    if reply[0] == b"err":  # what APPEND_ONE's own failure would have been
                        replies[i] = rexc.ResponseError(bytes(reply[1]).decode(errors="replace"))
                    else:
                        replies[i] = reply
                    j += 2 + count
            if not again:
                break
            script.sha = await self.redis.script_load(script.script)
            todo = again
        return replies

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
        if self.is_cluster:
            return await _cluster.read_raw_checked(self, partition, after, limit)
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._xrange_checked(
            self.redis, partition, after, limit)
        return entries

    async def read_flat(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[tuple[bytes, list[bytes]]]:
        """Like :meth:`read_raw`, but each entry's fields as the flat list the server
        sent (``[b"i", id, b"t", type, ...]``): no dict per entry, which was a quarter
        of a log scan's time (the orchestrator's catch-up on start)."""
        if self.is_cluster:
            return [(pos, [x for kv in fields.items() for x in kv])
                    for pos, fields in await self.read_raw(partition, after, limit)]
        self._check_partition(partition)
        parse_position(after)
        if self._flat_redis is None:
            assert isinstance(self.redis, aioredis.Redis)
            self._flat_redis = aioredis.Redis(connection_pool=self.redis.connection_pool)
            self._flat_redis.set_response_callback("XRANGE", _unparsed)
        entries: list[tuple[bytes, list[bytes]]] = await self._xrange_checked(
            self._flat_redis, partition, after, limit)
        return entries

    async def _xrange_checked(self, client: Any, partition: int, after: str,
                              limit: int) -> Any:
        """XRANGE after ``after`` and the trim horizon in one MULTI (one server):
        raises :class:`PositionTrimmed` when events after ``after`` are gone."""
        pipe = client.pipeline(transaction=True)
        pipe.get(self.keys.horizon(partition))
        pipe.xrange(self.keys.log(partition), f"({after}" if after != START else "-", "+", limit)
        horizon, entries = await _guard(pipe.execute())
        self._check_horizon(partition, after, horizon)
        return entries

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
        rows = await _guard(
            self._read_aggregate_script(
                keys=[self.keys.log(partition), self.keys.aggregate_index(partition, aggregate)],
                args=[start, stop],
            )
        )
        events = []
        for row in rows:
            if len(row) == 1:
                horizon = await _guard(self.redis.get(self.keys.horizon(partition)))
                raise PositionTrimmed(partition, text(row[0]), text(horizon))
            pos, flat = row
            events.append(decode_entry(partition, pos, flat_fields(flat)))
        return events

    async def aggregate_version(self, project: Any, aggregate_type: str, aggregate_id: str) -> int:
        partition = self.partition_of(project)
        aggregate = aggregate_key(project, aggregate_type, aggregate_id)
        raw = await _guard(self.redis.hget(self.keys.versions(partition), aggregate))
        return int(raw or 0)

    async def head(self, partition: int) -> str:
        """The last position of ``partition`` (``0-0`` when empty)."""
        self._check_partition(partition)
        last = await _guard(self.redis.xrevrange(self.keys.log(partition), "+", "-", 1))
        return text(last[0][0]) if last else START

    async def heads(self) -> Cursor:
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xrevrange(self.keys.log(p), "+", "-", 1)
        rows = await _guard(pipe.execute())
        return Cursor([r[0][0].decode() if r else START for r in rows])

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise InvalidInput(
                f"partition {partition} does not exist; this log has partitions "
                f"0..{self.partitions - 1}"
            )

    def _check_horizon(self, partition: int, after: str, horizon: bytes | None) -> None:
        if horizon and parse_position(after) < parse_position(horizon.decode()):
            raise PositionTrimmed(partition, after, horizon.decode())

    async def horizon(self, partition: int) -> str | None:
        raw = await _guard(self.redis.get(self.keys.horizon(partition)))
        return text(raw) if raw else None

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
        cursor = cursor or Cursor.start(self.partitions)
        wanted = list(partitions) if partitions is not None else list(range(self.partitions))
        if self.is_cluster and len(wanted) > 1:
            # One XREAD cannot span slots: one tail per partition, merged.
            async for merged in _cluster.merged_tail(
                self, cursor, wanted, block=block, count=count, on_idle=on_idle
            ):
                yield merged
            return
        async for raw in self.tail_raw(
            cursor, partitions=wanted, block=block, count=count, on_idle=on_idle
        ):
            yield [decode_entry(p, pos, fields) for p, pos, fields in raw]

    async def tail_raw(
        self,
        cursor: Cursor | None = None,
        *,
        partitions: Sequence[int] | None = None,
        block: float = 1.0,
        count: int = 1000,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[list[tuple[int, bytes, dict[bytes, bytes]]]]:
        """Like :meth:`tail`, but ``(partition, position, fields)`` undecoded.

        For consumers that want a few event types out of many: they can skip an
        entry by its ``a`` (aggregate) or ``t`` (type) field without paying for
        decoding it. On a cluster it reads one partition.
        """
        cursor = cursor or Cursor.start(self.partitions)
        wanted = list(partitions) if partitions is not None else list(range(self.partitions))
        if self.is_cluster and len(wanted) > 1:
            raise InvalidInput("tail_raw reads one partition at a time on a cluster")
        client = self._tail_redis or self.redis
        by_key = {self.keys.log(p): p for p in wanted}
        backoff = 0.05
        checked = False
        while True:
            try:
                if not checked:
                    for p in wanted:
                        self._check_horizon(p, cursor.positions[p], await self._raw_horizon(p))
                    checked = True
                streams: dict[Any, Any] = {self.keys.log(p): cursor.positions[p] for p in wanted}
                reply = await client.xread(streams, count=count, block=int(block * 1000))
                backoff = 0.05
            except UNAVAILABLE as exc:
                raise_if_cancelled()
                log.warning("tail: %s; retrying in %.2f s from %s", exc, backoff, cursor)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                checked = False
                continue
            raise_if_cancelled()
            if not reply:
                if on_idle is not None:
                    await on_idle()
                continue
            batch: list[tuple[int, bytes, dict[bytes, bytes]]] = []
            for key, entries in stream_items(reply):
                p = by_key[text(key)]
                batch.extend((p, pos, fields) for pos, fields in entries)
                if entries:
                    cursor = cursor.advanced(p, text(entries[-1][0]))
            if batch:
                yield batch

    async def _raw_horizon(self, partition: int) -> bytes | None:
        raw = await self.redis.get(self.keys.horizon(partition))
        return raw.encode() if isinstance(raw, str) else raw

    # -- retention -------------------------------------------------------------------

    async def trim(self, partition: int, before: str) -> int:
        """Remove the events of ``partition`` before position ``before``; return how many.

        Readers asking for a removed position then get :class:`PositionTrimmed`.
        """
        self._check_partition(partition)
        parse_position(before)
        removed, _ = await _guard(
            self._trim_script(
                keys=[self.keys.log(partition), self.keys.horizon(partition)], args=[before]
            )
        )
        return int(removed)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> StoreStatus:
        info = await _guard(self.redis.info("server"))
        if self.is_cluster and "redis_version" not in info:
            info = next(iter(info.values()))  # per node on a cluster; they run one version
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
            length, first, last, horizon = await _guard(pipe.execute())
            parts.append(
                PartitionStatus(
                    partition=p,
                    key=key,
                    length=int(length),
                    first_position=first[0][0].decode() if first else None,
                    last_position=last[0][0].decode() if last else None,
                    horizon=horizon.decode() if horizon else None,
                )
            )
        return StoreStatus(server=server, version=version, url=self.url, partitions=parts)


def connect(url: str, *, blocking: bool = False) -> Client:
    """A client for ``url`` that never retries behind our back.

    Appends are not blindly retried (an unacknowledged append may or may not
    have landed; the caller decides, with its event id). ``blocking`` clients
    serve XREAD BLOCK and get no socket timeout shorter than their blocks.
    ``redis+cluster://`` URLs give a cluster client (see :mod:`cluster`).
    """
    if _cluster.is_cluster_url(url):
        return _cluster.connect_cluster(url, blocking=blocking)
    client = aioredis.from_url(
        url,
        decode_responses=False,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=None if blocking else 10.0,
        socket_connect_timeout=2.0,
        health_check_interval=0,
    )
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client
