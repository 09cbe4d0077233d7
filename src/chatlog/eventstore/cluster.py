"""Redis Cluster (Valkey cluster mode) support, and a local cluster for tests and benchmarks.

A cluster URL is ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS);
more seed nodes may follow, comma-separated: ``redis+cluster://h1:7000,h2:7000``.
Every key of one partition carries the hash tag ``{pN}`` (see :mod:`keys`), so
each partition lives in one slot and every script and MULTI touches one slot.
What spans slots is done per partition here: a tail over several partitions
runs one XREAD per partition and merges their batches.

:class:`LocalCluster` forms a cluster from the bundled ``valkey-server``
(masters, optional replicas, loopback ports) with ``CLUSTER MEET``,
``ADDSLOTSRANGE`` and ``REPLICATE`` — no ``valkey-cli`` needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from chatlog.errors import ConfigError, EmbeddedServerError
from chatlog.eventstore.embedded import EmbeddedValkey, free_port

if TYPE_CHECKING:
    from chatlog.events import RecordedEvent
    from chatlog.eventstore.codec import Cursor
    from chatlog.eventstore.store import EventStore

#: URL schemes that mean "a Redis Cluster", and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SLOTS = 16384

#: Cluster errors that mean "not reachable right now" (a failover, a node down).
CLUSTER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ClusterDownError,
    rexc.ClusterError,
    rexc.TryAgainError,
    rexc.RedisClusterException,  # "cannot be connected", "slots not covered" while electing
)


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def connect_cluster(url: str, *, blocking: bool = False) -> RedisCluster:
    """A cluster client for ``url`` that never retries behind our back.

    With no retries, a command that failed on a dead node raises at once (the
    store turns it into :class:`StoreUnavailable`) and the next command
    rediscovers the topology (``CLUSTER SLOTS`` from any seed node that answers).
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(f"{url!r} is not a cluster URL (redis+cluster://host:port)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [h.strip() for h in hosts.split(",") if h.strip()]
    if not seeds:
        raise ConfigError(f"cluster URL {url!r} names no node; use redis+cluster://host:port")
    if parts.path not in {"", "/", "/0"}:
        raise ConfigError(f"cluster URL {url!r}: a cluster has only database 0")
    first = urlunsplit((scheme, f"{userinfo}@{seeds[0]}" if userinfo else seeds[0], "",
                        parts.query, ""))
    startup = [ClusterNode(*_host_port(s)) for s in seeds[1:]]
    client = RedisCluster.from_url(
        first,
        startup_nodes=startup or None,
        decode_responses=False,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=None if blocking else 10.0,
        socket_connect_timeout=2.0,
        health_check_interval=0,
        max_connections=1000,
    )
    _pack_with_hiredis(client)
    return client


class _SafeSend(AbstractConnection):
    """A send on a connection that another task just closed is a ConnectionError.

    redis-py's cluster client closes every connection of the cluster when a
    node answers CLUSTERDOWN (during a failover); a command of another task
    that had already checked its connection then met ``_writer = None`` and
    failed with an AttributeError instead of a connection error.
    """

    async def _send_packed_command(self, command: Any) -> None:
        writer = self._writer
        if writer is None:
            raise rexc.ConnectionError("the connection was closed by a cluster topology refresh")
        writer.writelines(command)
        await writer.drain()


_CONNECTION_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _cluster_connection(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` packing with hiredis (as for one server, :mod:`packing`) and sending safely."""
    from chatlog.eventstore.packing import hiredis_packing

    if cls not in _CONNECTION_CLASSES:
        packed = hiredis_packing(cls)
        _CONNECTION_CLASSES[cls] = type(f"Cluster{packed.__name__}", (_SafeSend, packed), {})
    return _CONNECTION_CLASSES[cls]


def _pack_with_hiredis(client: RedisCluster) -> None:
    """Use :func:`_cluster_connection`; nodes found later are built from these kwargs."""
    kwargs = client.nodes_manager.connection_kwargs
    kwargs["connection_class"] = _cluster_connection(kwargs["connection_class"])
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = _cluster_connection(node.connection_class)  # type: ignore[assignment]


def _host_port(seed: str) -> tuple[str, int]:
    host, _, port = seed.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster seed {seed!r} is not host:port")
    return host.strip("[]"), int(port)


async def initialize(*clients: Any) -> None:
    """Learn the topology before the first command (else it goes to a random node)."""
    from chatlog.eventstore.store import UNAVAILABLE, _unavailable

    for client in clients:
        if isinstance(client, RedisCluster):
            try:
                await client.initialize()
            except UNAVAILABLE as exc:
                raise _unavailable(exc) from exc


async def close_client(client: Any) -> None:
    """Close a client and every connection it opened.

    ``RedisCluster.aclose()`` does nothing while the client is flagged for
    rediscovery (after a MOVED or a failed node), yet connections made since
    are open; close the nodes themselves too.
    """
    await client.aclose()
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        await manager.aclose()
        await manager.aclose("startup_nodes")


async def refresh_topology(client: Any) -> None:
    """After a connection failure: rediscover the nodes before the next command.

    The flag redis-py itself sets after a failed single command; unlike
    ``aclose()`` it does not cut the connections other tasks are using (a
    pipeline that failed on a dead node does not set it by itself).
    """
    if isinstance(client, RedisCluster):
        client._initialize = True


async def placement(store: EventStore) -> dict[str, Any]:
    """Which node serves each partition now (``{}`` on one server), for ``chatlog status``."""
    client = store.redis
    if not isinstance(client, RedisCluster):
        return {}
    await client.initialize()
    where = {}
    for p in range(store.partitions):
        node = client.get_node_from_key(store.keys.log(p))
        where[f"p{p}"] = node.name if node is not None else None
    masters = sorted(n.name for n in client.get_primaries())
    return {"masters": masters, "partitions": where}


# -- reads ---------------------------------------------------------------------------


async def read_raw_checked(
    store: EventStore, partition: int, after: str, limit: int, *, with_first: bool = False
) -> tuple[list[tuple[bytes, dict[bytes, bytes]]], bytes | None]:
    """XRANGE between two reads of the horizon, on one connection, without MULTI.

    redis-py's async cluster transactions run on a helper thread and event
    loop, so they are not used. Trimming always moves the horizon, so equal
    horizons before and after the XRANGE mean no trim ran in between and the
    entries have no gap; otherwise read again. ``with_first``: also the
    stream's first position, read before and after the XRANGE too (equal: no
    archiver removed entries in between, so it is the first one of that read).
    """
    from chatlog.eventstore.store import _guard

    horizon_key, log_key = store.keys.horizon(partition), store.keys.log(partition)
    start = f"({after}" if after != "0-0" else "-"
    for _ in range(100):
        pipe = store.redis.pipeline(transaction=False)
        pipe.get(horizon_key)
        if with_first:
            pipe.xrange(log_key, "-", "+", 1)
        pipe.xrange(log_key, start, "+", limit)
        if with_first:
            pipe.xrange(log_key, "-", "+", 1)
        pipe.get(horizon_key)
        replies = await _guard(pipe.execute())
        before, again = replies[0], replies[-1]
        entries = replies[2] if with_first else replies[1]
        firsts = [r[0][0] if r else None for r in replies[1:4:2]] if with_first else [None]
        if before == again and firsts[0] == firsts[-1]:
            store._check_horizon(partition, after, before)
            return entries, firsts[0]
    raise AssertionError(f"partition {partition} was trimmed 100 times during one read")


# -- tails across slots ----------------------------------------------------------


async def merged_tail(
    store: EventStore,
    cursor: Cursor,
    partitions: Sequence[int],
    *,
    block: float,
    count: int,
    on_idle: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[list[RecordedEvent]]:
    """One single-partition tail per partition, their batches merged as they come.

    A multi-stream XREAD cannot span slots, so each partition blocks on its own
    connection. Each yielded batch belongs to one partition; a slow consumer
    holds the readers back (the queue is bounded). An error of one reader (a
    trimmed position) ends the whole tail with that error.
    """
    queue: asyncio.Queue[list[RecordedEvent] | BaseException] = asyncio.Queue(len(partitions))

    async def reader(p: int) -> None:
        try:
            async for batch in store.tail(cursor, partitions=[p], block=block, count=count):
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


# -- a local cluster from the bundled binary ------------------------------------------


class LocalCluster:
    """A Valkey cluster of ``masters`` masters (and replicas) on loopback ports.

    Each node has its own directory under ``base_dir`` and is started from the
    bundled binary; :meth:`stop` stops them by pid. ``node_timeout`` (ms) is
    how long a silent master may be before its replica is promoted.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout: int = 5000,
        fsync: str = "always",
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs one master or more and 0+ replicas per master")
        self.base_dir = Path(base_dir)
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout = node_timeout
        self.fsync = fsync
        self.nodes: list[EmbeddedValkey] = []
        self.ids: dict[int, str] = {}  # port -> node id
        self.bus_ports: dict[int, int] = {}  # port -> cluster bus port

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every live node as a seed."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.process is not None)
        return f"redis+cluster://{seeds}"

    def client(self, node: EmbeddedValkey) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=int(node.port or 0), socket_timeout=5.0,
                           decode_responses=True)

    def command(self, node: EmbeddedValkey, *args: Any) -> Any:
        """Run one command on ``node`` (a fresh connection; for setup and tests)."""
        with self.client(node) as r:
            return r.execute_command(*args)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start the nodes, join them, assign slots, attach replicas; wait for ``ok``."""
        total = self.n_masters * (1 + self.n_replicas)
        try:
            for i in range(total):
                self.nodes.append(self._start_node(i))
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, i: int) -> EmbeddedValkey:
        bus = free_port()
        node = EmbeddedValkey(
            self.base_dir / f"n{i}",
            port=0,
            fsync=self.fsync,
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(self.node_timeout),
                "--cluster-require-full-coverage", "yes",
                "--cluster-replica-validity-factor", "0",  # a replica may always take over
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            ],
        )
        node.start()
        self.bus_ports[int(node.port or 0)] = bus
        return node

    def _form(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        masters = self.nodes[: self.n_masters]
        for i, node in enumerate(self.nodes):
            self.ids[int(node.port or 0)] = self.command(node, "CLUSTER", "MYID")
            with contextlib.suppress(rexc.ResponseError):
                self.command(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            port = int(node.port or 0)
            self.command(first, "CLUSTER", "MEET", "127.0.0.1", port, self.bus_ports[port])
        per = SLOTS // self.n_masters
        for i, node in enumerate(masters):
            lo = i * per
            hi = SLOTS - 1 if i == self.n_masters - 1 else lo + per - 1
            self.command(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        self._wait(deadline, self._all_known, "every node to know every other")
        for j, node in enumerate(self.nodes[self.n_masters:]):
            master = masters[j % self.n_masters]
            self.command(node, "CLUSTER", "REPLICATE", self.ids[int(master.port or 0)])
        self.wait_ok(max(deadline - time.monotonic(), 1.0))

    def _all_known(self) -> bool:
        want = len(self.nodes)
        for node in self.nodes:
            lines = str(self.command(node, "CLUSTER", "NODES")).strip().splitlines()
            if len(lines) != want or any("handshake" in ln or "noaddr" in ln for ln in lines):
                return False
        return True

    def _wait(self, deadline: float, check: Callable[[], bool], what: str) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(rexc.RedisError, OSError):
                if check():
                    return
            time.sleep(0.05)
        raise EmbeddedServerError(f"local cluster: timed out waiting for {what}")

    def live(self) -> list[EmbeddedValkey]:
        return [n for n in self.nodes if n.process is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout

        def ok() -> bool:
            masters_seen = set()
            for node in self.live():
                info = str(self.command(node, "CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                masters_seen.add(frozenset(self._masters_by(node)))
                role = self.command(node, "ROLE")
                if role[0] in ("slave", "replica") and role[3] != "connected":
                    return False
            return len(masters_seen) == 1

        self._wait(deadline, ok, "cluster_state:ok on every node")

    def _masters_by(self, node: EmbeddedValkey) -> list[str]:
        """The ids of the masters holding slots, as ``node`` sees them."""
        out = []
        for line in str(self.command(node, "CLUSTER", "NODES")).strip().splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                out.append(parts[0])
        return out

    def node_at(self, port: int) -> EmbeddedValkey:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> EmbeddedValkey:
        """The live master that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.live():
            with contextlib.suppress(rexc.RedisError, OSError):
                for lo, hi, primary, *_ in self.command(node, "CLUSTER", "SLOTS"):
                    if lo <= slot <= hi:
                        owner = self.node_at(int(primary[1]))
                        if owner.process is not None and self.command(owner, "ROLE")[0] == "master":
                            return owner
        raise EmbeddedServerError(f"no live master serves {key!r}")

    def replicas_of(self, master: EmbeddedValkey) -> list[EmbeddedValkey]:
        """The live nodes replicating ``master``."""
        out = []
        for node in self.live():
            role = self.command(node, "ROLE")
            if role[0] in ("slave", "replica") and int(role[2]) == master.port:
                out.append(node)
        return out

    def stop(self) -> None:
        """Stop every node (by its own pid)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
