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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chatlog.errors import PositionTrimmed
from chatlog.eventstore import cluster as _cluster
from chatlog.eventstore.codec import START, Cursor, parse_position
from chatlog.eventstore.connection import (
    UNAVAILABLE,
    Client,
    client_options,
    guard,
    raise_if_cancelled,
    stream_items,
    text,
    unavailable,
)
from chatlog.eventstore.keys import Keys
from chatlog.eventstore.packing import hiredis_packing

log = logging.getLogger("chatlog.eventstore.store")

#: A stream entry as a tail yields it: (partition, position, fields).
RawEntry = tuple[int, bytes, dict[bytes, bytes]]
#: A stream entry with its fields as the flat list the server sent.
FlatEntry = tuple[bytes, list[bytes]]
OnIdle = Callable[[], Awaitable[None]] | None


def connect(url: str, *, blocking: bool = False) -> Client:
    """A client for ``url`` that never retries behind our back.

    Appends are not blindly retried (an unacknowledged append may or may not
    have landed; the caller decides, with its event id). ``blocking`` clients
    serve XREAD BLOCK and get no socket timeout shorter than their blocks.
    ``redis+cluster://`` URLs give a cluster client (see :mod:`cluster`).
    """
    if _cluster.is_cluster_url(url):
        return _cluster.connect_cluster(url, blocking=blocking)
    client = aioredis.from_url(url, **client_options(blocking=blocking))
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


def topology_of(redis: Client, tail_redis: Client | None = None) -> Topology:
    """The topology ``redis`` talks to (``tail_redis``: a client for blocking reads)."""
    if isinstance(redis, RedisCluster):
        return Cluster(redis, tail_redis)
    return SingleServer(redis, tail_redis)


def check_horizon(partition: int, after: str, horizon: bytes | None) -> None:
    """Raise :class:`PositionTrimmed` when events after ``after`` were trimmed
    (``horizon``, the last trimmed position, is past it)."""
    if horizon and parse_position(after) < parse_position(horizon.decode()):
        raise PositionTrimmed(partition, after, horizon.decode())


def _unparsed(response: Any, **options: Any) -> Any:
    return response


def _flattened(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[FlatEntry]:
    return [(pos, [x for kv in fields.items() for x in kv]) for pos, fields in entries]


class Topology(ABC):
    """What the store does differently on one server and on a cluster."""

    is_cluster: ClassVar[bool] = False

    def __init__(self, redis: Client, tail_redis: Client | None) -> None:
        self.redis = redis
        #: The client for blocking reads (XREAD BLOCK); the main one when there is none.
        self.tail_redis = tail_redis or redis
        self._own_tail = tail_redis is not None and tail_redis is not redis

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


class SingleServer(Topology):
    """One Redis or Valkey server (``redis://``, ``rediss://``, ``unix://``)."""

    redis: aioredis.Redis

    def __init__(self, redis: aioredis.Redis, tail_redis: Client | None) -> None:
        super().__init__(redis, tail_redis)
        #: A client on the same connections whose XRANGE replies stay unparsed.
        self._flat = aioredis.Redis(connection_pool=redis.connection_pool)
        self._flat.set_response_callback("XRANGE", _unparsed)

    async def initialize(self) -> None:
        return None

    async def after_unavailable(self) -> None:
        """Drop the idle pooled connections (the next command opens a fresh one)."""
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    async def read_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._xrange_checked(
            self.redis, keys, partition, after, limit)
        return entries

    async def read_flat_checked(
        self, keys: Keys, partition: int, after: str, limit: int
    ) -> list[FlatEntry]:
        entries: list[FlatEntry] = await self._xrange_checked(
            self._flat, keys, partition, after, limit)
        return entries

    async def xrange_flat(self, key: str, start: str, count: int) -> list[FlatEntry]:
        entries: list[FlatEntry] = await guard(
            self._flat.xrange(key, start, "+", count))  # type: ignore[arg-type]
        return entries

    async def _xrange_checked(
        self, client: aioredis.Redis, keys: Keys, partition: int, after: str, limit: int
    ) -> Any:
        """XRANGE after ``after`` and the trim horizon in one MULTI."""
        pipe = client.pipeline(transaction=True)
        pipe.get(keys.horizon(partition))
        pipe.xrange(keys.log(partition), f"({after}" if after != START else "-", "+", limit)
        horizon, entries = await guard(pipe.execute())
        check_horizon(partition, after, horizon)
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
            pipe.xrange(log_key, start, "+", limit)
            pipe.get(horizon_key)
            before, entries, again = await guard(pipe.execute())
            if before == again:
                check_horizon(partition, after, before)
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

    async def node_groups(self, log_keys: Sequence[str]) -> list[tuple[Any, list[int]]]:
        await self.redis.initialize()
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, key in enumerate(log_keys):
            node = self.redis.get_node_from_key(key)
            assert node is not None
            groups.setdefault(node.name, (node, []))[1].append(i)
        return list(groups.values())


async def tail_streams(
    topology: Topology, keys: Keys, cursor: Cursor, partitions: list[int], *, block: float,
    count: int, on_idle: OnIdle,
) -> AsyncIterator[list[RawEntry]]:
    """One XREAD BLOCK over ``partitions`` (one server, or one slot), forever.

    The positions are first checked against the trim horizons. A dropped
    connection is retried with backoff from the last entry yielded, so
    nothing is skipped or repeated.
    """
    client = topology.tail_redis
    by_key = {keys.log(p): p for p in partitions}
    backoff = 0.05
    checked = False
    while True:
        try:
            if not checked:
                for p in partitions:
                    check_horizon(p, cursor.positions[p], await topology.raw_horizon(keys, p))
                checked = True
            streams: dict[Any, Any] = {keys.log(p): cursor.positions[p] for p in partitions}
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
        batch: list[RawEntry] = []
        for key, entries in stream_items(reply):
            p = by_key[text(key)]
            batch.extend((p, pos, fields) for pos, fields in entries)
            if entries:
                cursor = cursor.advanced(p, text(entries[-1][0]))
        if batch:
            yield batch
