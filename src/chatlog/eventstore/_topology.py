"""Single server or cluster: what differs between them, behind one small interface.

:func:`topology_of` picks :class:`SingleServer` or :class:`Cluster` once, from
the client :func:`connect` made for the URL; the store delegates to it and
never asks which one it has. What differs:

- closing a client, and what to do after a connection failure;
- a read checked against the trim horizon (one MULTI on one server; on a
  cluster, two horizon reads around the XRANGE, as redis-py's async cluster
  client runs transactions on a helper thread);
- entries as the flat list the server sent (one server: a client that leaves
  XRANGE unparsed; a cluster: the parsed dicts flattened);
- a tail over several partitions (one XREAD on one server; on a cluster, one
  XREAD per partition, since one cannot span slots, merged as they come);
- the server's INFO, which node serves each partition, and which node each
  append of a replicated group commit runs on.

What both share: with ``committed_only`` (``CHATLOG_ACK=replicated``) every
read and tail delivers only entries at or before the partition's committed
position (its high watermark, advanced after each successful WAIT: see
:mod:`.replication`). The checked reads read it in the same MULTI or pipeline
as the entries; a tail blocks on the committed position itself (XREAD on the
``committed`` stream from the reader's cursor wakes once it moves past it),
then reads the log up to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chatlog.errors import ConfigError
from chatlog.eventstore import _lean_reads
from chatlog.eventstore import cluster as _cluster
from chatlog.eventstore._tail import OnIdle, check_horizon, tail_streams
from chatlog.eventstore._tail import RawEntry as RawEntry
from chatlog.eventstore._watermark import capped, committed_of
from chatlog.eventstore.codec import START, Cursor
from chatlog.eventstore.connection import (
    UNAVAILABLE,
    Client,
    checked_url,
    client_options,
    guard,
    stream_items,
    unavailable,
)
from chatlog.eventstore.keys import Keys
from chatlog.eventstore.lean import LeanConnection, LeanPool, address_of_pool
from chatlog.eventstore.packing import hiredis_packing

log = logging.getLogger("chatlog.eventstore.store")

#: A stream entry with its fields as the flat list the server sent.
FlatEntry = tuple[bytes, list[bytes]]


def connect(url: str, *, blocking: bool = False) -> Client:
    """A client for ``url`` that never retries behind our back.

    Appends are not blindly retried (an unacknowledged append may or may not
    have landed; the caller decides, with its event id). ``blocking`` clients
    serve XREAD BLOCK and get no socket timeout shorter than their blocks.
    ``redis+cluster://`` URLs give a cluster client (see :mod:`cluster`).
    """
    url = checked_url(url, blocking=blocking)  # a blocking one: no ?socket_timeout=
    try:
        if _cluster.is_cluster_url(url):
            return _cluster.connect_cluster(url, blocking=blocking)
        client = aioredis.from_url(url, **client_options(blocking=blocking))
    except ValueError as exc:  # a scheme or ?option redis-py cannot read; the URL may
        # hold a password, so it is not repeated
        raise ConfigError(f"invalid Redis URL: {exc}") from None
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


def topology_of(
    redis: Client, tail_redis: Client | None = None, *, lean: bool = True
) -> Topology:
    """The topology ``redis`` talks to (``tail_redis``: a client for blocking reads).

    ``lean``: on one server, the hot paths (appends, tails, range reads) go over
    :mod:`.lean` connections (not for TLS); False keeps them on redis-py.
    """
    if isinstance(redis, RedisCluster):
        return Cluster(redis, tail_redis)
    return SingleServer(redis, tail_redis, lean=lean)


def _unparsed(response: Any, **options: Any) -> Any:
    return response


def _flattened(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[FlatEntry]:
    return [(pos, [x for kv in fields.items() for x in kv]) for pos, fields in entries]


class Topology(ABC):
    """What the store does differently on one server and on a cluster."""

    is_cluster: ClassVar[bool] = False
    #: The lean connection group commits go over (None: through redis-py).
    lean: LeanConnection | None = None

    def __init__(self, redis: Client, tail_redis: Client | None) -> None:
        self.redis = redis
        #: The client for blocking reads (XREAD BLOCK); the main one when there is none.
        self.tail_redis = tail_redis or redis
        self._own_tail = tail_redis is not None and tail_redis is not redis
        #: Deliver only entries at or before each partition's committed position
        #: (the store sets it under ``CHATLOG_ACK=replicated``).
        self.committed_only = False

    async def committed(self, keys: Keys, partitions: Sequence[int]) -> list[str]:
        """Each partition's committed position (``0-0`` before the first)."""
        pipe = self.redis.pipeline(transaction=False)
        for p in partitions:
            pipe.xrevrange(keys.committed(p), "+", "-", 1)
        return [committed_of(r) for r in await guard(pipe.execute())]

    @abstractmethod
    async def initialize(self) -> None:
        """Whatever must happen before the first command (nothing on one server)."""

    async def close(self) -> None:
        """Close the clients and every connection they opened."""
        await self.redis.aclose()
        if self._own_tail:
            await self.tail_redis.aclose()

    @abstractmethod
    async def after_unavailable(self) -> None:
        """After a connection failure: make the next command find a live connection."""

    @abstractmethod
    async def read_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries after ``after`` (at most ``limit``), or :class:`PositionTrimmed`
        when events after ``after`` are gone."""

    async def read_flat_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[FlatEntry]:
        """:meth:`read_checked` with each entry's fields as a flat list."""
        return _flattened(await self.read_checked(keys, partition, after, limit))

    async def read_checked_first(
        self, keys: Keys, partition: int, after: str, limit: int, *, flat: bool
    ) -> tuple[Any, bytes | None]:
        """:meth:`read_checked` (flat fields with ``flat``) and the stream's first position
        then (None: empty), which tells the tiered read whether the archive holds events
        after ``after``. Horizon and first entry are read before and after the XRANGE,
        without MULTI (as :class:`Cluster` reads): equal, nothing was trimmed between."""
        horizon_key, log_key = keys.horizon(partition), keys.log(partition)
        start = f"({after}" if after != START else "-"
        for _ in range(100):
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(horizon_key)
            pipe.xrange(log_key, "-", "+", 1)
            if self.committed_only:
                pipe.xrevrange(keys.committed(partition), "+", "-", 1)
            pipe.xrange(log_key, start, "+", limit)
            pipe.xrange(log_key, "-", "+", 1)
            pipe.get(horizon_key)
            before, head, *mark, entries, head_again, again = await guard(pipe.execute())
            first = head[0][0] if head else None
            if before == again and first == (head_again[0][0] if head_again else None):
                check_horizon(partition, after, before)
                if mark:
                    entries = capped(entries, committed_of(mark[0]))
                return (_flattened(entries) if flat else entries), first
        raise AssertionError(f"partition {partition} was trimmed 100 times during one read")

    async def xrange_flat(self, key: str, start: str, count: int) -> list[FlatEntry]:
        """XRANGE ``key`` from ``start`` (``-`` or ``(pos``), flat fields, unchecked."""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await guard(
            self.redis.xrange(key, start, "+", count))  # type: ignore[arg-type]
        return _flattened(entries)

    async def raw_horizon(self, keys: Keys, partition: int) -> bytes | None:
        """The last trimmed position of ``partition`` as stored (None: never trimmed)."""
        raw = await self.redis.get(keys.horizon(partition))
        return raw.encode() if isinstance(raw, str) else raw

    def tail(
        self, keys: Keys, cursor: Cursor, partitions: list[int], *, block: float, count: int,
        on_idle: OnIdle,
    ) -> AsyncIterator[list[RawEntry]]:
        """Batches of entries after ``cursor`` in ``partitions``, as they come, forever."""
        return tail_streams(self, keys, cursor, partitions, block=block, count=count,
                            on_idle=on_idle)

    async def xread(
        self, streams: dict[str, str], *, count: int, block_ms: int
    ) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """One ``XREAD COUNT BLOCK`` on a blocking connection: ``[(key, entries)]``."""
        reply = await self.tail_redis.xread(streams, count=count, block=block_ms)  # type: ignore[arg-type]
        return stream_items(reply)

    async def server_info(self) -> dict[Any, Any]:
        """INFO ``server`` of (one node of) the deployment."""
        info: dict[Any, Any] = await guard(self.redis.info("server"))
        return info

    async def placement(self, keys: Keys, partitions: int) -> dict[str, Any]:
        """Which node serves each partition now (``{}`` on one server)."""
        return {}

    async def node_groups(self, log_keys: Sequence[str]) -> list[tuple[Any, list[int]]]:
        """``[(node or None, indexes of log_keys)]``: one group per node the keys live on."""
        return [(None, list(range(len(log_keys))))]

    def shard_of(self, key: str) -> str:
        """The name of the node that serves ``key`` now, as far as known (``""`` on one
        server): appends group-commit per shard, so a stalled one holds up only its own."""
        return ""


class SingleServer(Topology):
    """One Redis or Valkey server (``redis://``, ``rediss://``, ``unix://``).

    Unless ``lean`` is off (or the server is reached over TLS), the hot paths
    go over :mod:`.lean` connections: group commits over one, range reads over
    another (a long read does not hold appends back), each tail's
    ``XREAD BLOCK`` over one of its own. Everything else stays on redis-py.
    """

    redis: aioredis.Redis

    def __init__(self, redis: aioredis.Redis, tail_redis: Client | None, *,
                 lean: bool = True) -> None:
        super().__init__(redis, tail_redis)
        #: A client on the same connections whose XRANGE replies stay unparsed.
        self._flat = aioredis.Redis(connection_pool=redis.connection_pool)
        self._flat.set_response_callback("XRANGE", _unparsed)
        self.lean = address_of_pool(redis.connection_pool) if lean else None
        self._lean_reads: LeanConnection | None = None
        self._lean_tails: LeanPool | None = None
        if self.lean is not None:
            self._lean_reads = address_of_pool(redis.connection_pool)
            self._lean_tails = LeanPool(address_of_pool(redis.connection_pool, blocking=True)
                                        or self.lean)

    async def initialize(self) -> None:
        return None

    async def close(self) -> None:
        await super().close()
        for conn in (self.lean, self._lean_reads):
            if conn is not None:
                await conn.close()
        if self._lean_tails is not None:
            await self._lean_tails.close()

    async def after_unavailable(self) -> None:
        """Drop the idle pooled connections (the next command opens a fresh one;
        a lean connection reopens by itself)."""
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def raw_horizon(self, keys: Keys, partition: int) -> bytes | None:
        if self._lean_reads is None:  # else a GET without redis-py's cost (one per page)
            return await super().raw_horizon(keys, partition)
        raw: bytes | None = await self._lean_reads.execute("GET", keys.horizon(partition))
        return raw

    async def read_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if self._lean_reads is not None:
            return [(pos, dict(zip(flat[::2], flat[1::2], strict=True)))
                    for pos, flat in await self.read_flat_checked(keys, partition, after, limit)]
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._xrange_checked(
            self.redis, keys, partition, after, limit)
        return entries

    async def read_flat_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[FlatEntry]:
        if self._lean_reads is not None:
            horizon, entries = await _lean_reads.read_flat_checked(
                self._lean_reads, keys, partition, after, limit, committed=self.committed_only)
            check_horizon(partition, after, horizon)
            return entries
        flat: list[FlatEntry] = await self._xrange_checked(
            self._flat, keys, partition, after, limit)
        return flat

    async def read_checked_first(
        self, keys: Keys, partition: int, after: str, limit: int, *, flat: bool
    ) -> tuple[Any, bytes | None]:
        if self._lean_reads is None:
            return await super().read_checked_first(keys, partition, after, limit, flat=flat)
        horizon, first, entries = await _lean_reads.read_flat_first(
            self._lean_reads, keys, partition, after, limit, committed=self.committed_only)
        check_horizon(partition, after, horizon)
        if flat:  # (position, fields) tuples, as every other read gives them
            return [(pos, f) for pos, f in entries], first
        return [(pos, dict(zip(f[::2], f[1::2], strict=True))) for pos, f in entries], first

    async def xrange_flat(self, key: str, start: str, count: int) -> list[FlatEntry]:
        if self._lean_reads is not None:
            entries: list[FlatEntry] = await guard(
                self._lean_reads.execute("XRANGE", key, start, "+", "COUNT", count))
            return entries
        entries = await guard(
            self._flat.xrange(key, start, "+", count))  # type: ignore[arg-type]
        return entries

    async def xread(
        self, streams: dict[str, str], *, count: int, block_ms: int
    ) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
        if self._lean_tails is None:
            return await super().xread(streams, count=count, block_ms=block_ms)
        return await _lean_reads.xread(self._lean_tails, streams, count=count,
                                       block_ms=block_ms)

    async def _xrange_checked(
        self, client: aioredis.Redis, keys: Keys, partition: int, after: str, limit: int
    ) -> Any:
        """XRANGE after ``after`` and the trim horizon in one MULTI."""
        pipe = client.pipeline(transaction=True)
        pipe.get(keys.horizon(partition))
        if self.committed_only:
            pipe.xrevrange(keys.committed(partition), "+", "-", 1)
        pipe.xrange(keys.log(partition), f"({after}" if after != START else "-", "+", limit)
        replies = await guard(pipe.execute())
        horizon, entries = replies[0], replies[-1]
        check_horizon(partition, after, horizon)
        if self.committed_only:
            return capped(entries, committed_of(replies[1]))
        return entries



class Cluster(Topology):
    """A Redis Cluster (``redis+cluster://``): each partition lives in one slot."""

    is_cluster = True
    redis: RedisCluster

    async def initialize(self) -> None:
        """Learn the topology before the first command (else it goes to a random node)."""
        for client in {id(c): c for c in (self.redis, self.tail_redis)}.values():
            if isinstance(client, RedisCluster):
                try:
                    await client.initialize()
                except UNAVAILABLE as exc:
                    raise unavailable(exc) from exc

    async def close(self) -> None:
        """Close the clients and every connection they opened.

        ``RedisCluster.aclose()`` does nothing while the client is flagged for
        rediscovery (after a MOVED or a failed node), yet connections made since
        are open; close the nodes themselves too.
        """
        for client in (self.redis, self.tail_redis) if self._own_tail else (self.redis,):
            await client.aclose()
            if isinstance(client, RedisCluster):
                manager = client.nodes_manager
                await manager.aclose()
                await manager.aclose("startup_nodes")

    async def after_unavailable(self) -> None:
        """Rediscover the nodes before the next command.

        The flag redis-py itself sets after a failed single command; unlike
        ``aclose()`` it does not cut the connections other tasks are using (a
        pipeline that failed on a dead node does not set it by itself).
        """
        self.redis._initialize = True

    async def read_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """XRANGE between two reads of the horizon, on one connection, without MULTI.

        Trimming always moves the horizon, so equal horizons before and after
        the XRANGE mean no trim ran in between and the entries have no gap;
        otherwise read again.
        """
        horizon_key, log_key = keys.horizon(partition), keys.log(partition)
        start = f"({after}" if after != START else "-"
        for _ in range(100):
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(horizon_key)
            if self.committed_only:
                pipe.xrevrange(keys.committed(partition), "+", "-", 1)
            pipe.xrange(log_key, start, "+", limit)
            pipe.get(horizon_key)
            replies = await guard(pipe.execute())
            before, entries, again = replies[0], replies[-2], replies[-1]
            if before == again:
                check_horizon(partition, after, before)
                if self.committed_only:
                    return capped(entries, committed_of(replies[1]))
                return entries  # type: ignore[no-any-return]
        raise AssertionError(f"partition {partition} was trimmed 100 times during one read")

    def tail(
        self, keys: Keys, cursor: Cursor, partitions: list[int], *, block: float, count: int,
        on_idle: OnIdle,
    ) -> AsyncIterator[list[RawEntry]]:
        if len(partitions) == 1:
            return super().tail(keys, cursor, partitions, block=block, count=count,
                                on_idle=on_idle)
        return self._merged_tail(keys, cursor, partitions, block=block, count=count,
                                 on_idle=on_idle)

    async def _merged_tail(
        self, keys: Keys, cursor: Cursor, partitions: list[int], *, block: float, count: int,
        on_idle: OnIdle,
    ) -> AsyncIterator[list[RawEntry]]:
        """One single-partition tail per partition, their batches merged as they come.

        Each partition blocks on its own connection. Each yielded batch belongs
        to one partition; a slow consumer holds the readers back (the queue is
        bounded). An error of one reader (a trimmed position) ends the whole
        tail with that error.
        """
        queue: asyncio.Queue[list[RawEntry] | BaseException] = asyncio.Queue(len(partitions))

        async def reader(p: int) -> None:
            try:
                async for batch in tail_streams(self, keys, cursor, [p], block=block,
                                                count=count, on_idle=None):
                    await queue.put(batch)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                await queue.put(exc)

        tasks = [asyncio.create_task(reader(p), name=f"chatlog-tail-p{p}") for p in partitions]
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), block)
                except TimeoutError:
                    if on_idle is not None:
                        await on_idle()
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def server_info(self) -> dict[Any, Any]:
        info: dict[Any, Any] = await guard(self.redis.info("server"))
        if "redis_version" not in info:
            info = next(iter(info.values()))  # per node on a cluster; they run one version
        return info

    async def placement(self, keys: Keys, partitions: int) -> dict[str, Any]:
        client = self.redis
        await client.initialize()
        where = {}
        for p in range(partitions):
            node = client.get_node_from_key(keys.log(p))
            where[f"p{p}"] = node.name if node is not None else None
        masters = sorted(n.name for n in client.get_primaries())
        return {"masters": masters, "partitions": where}

    def shard_of(self, key: str) -> str:
        try:
            node = self.redis.get_node_from_key(key)
        except Exception:  # topology not known yet (or being rediscovered): one shared queue
            return ""
        return node.name if node is not None else ""

    async def node_groups(self, log_keys: Sequence[str]) -> list[tuple[Any, list[int]]]:
        await self.redis.initialize()
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, key in enumerate(log_keys):
            node = self.redis.get_node_from_key(key)
            assert node is not None
            groups.setdefault(node.name, (node, []))[1].append(i)
        return list(groups.values())

