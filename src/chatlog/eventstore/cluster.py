"""Redis Cluster (Valkey cluster mode) clients.

A cluster URL is ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS);
more seed nodes may follow, comma-separated: ``redis+cluster://h1:7000,h2:7000``.
Every key of one partition carries the hash tag ``{pN}`` (see :mod:`keys`), so
each partition lives in one slot and every script and MULTI touches one slot.
What the store does differently on a cluster is in
:class:`chatlog.eventstore._topology.Cluster`; a local cluster for tests and
benchmarks is :class:`chatlog.testing.LocalCluster`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection

from chatlog.errors import ConfigError
from chatlog.eventstore.connection import CLUSTER_UNAVAILABLE, client_options
from chatlog.eventstore.packing import hiredis_packing

__all__ = ["CLUSTER_SCHEMES", "CLUSTER_UNAVAILABLE", "connect_cluster", "is_cluster_url"]

#: URL schemes that mean "a Redis Cluster", and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


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
        max_connections=1000,
        **client_options(blocking=blocking),
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


def _pack_with_hiredis(client: RedisCluster) -> None:
    """Connections that pack with hiredis and send safely; nodes found later are
    built from these kwargs."""
    kwargs = client.nodes_manager.connection_kwargs
    kwargs["connection_class"] = hiredis_packing(kwargs["connection_class"], first=_SafeSend)
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = hiredis_packing(  # type: ignore[assignment]
            node.connection_class, first=_SafeSend)


def _host_port(seed: str) -> tuple[str, int]:
    host, _, port = seed.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster seed {seed!r} is not host:port")
    return host.strip("[]"), int(port)
