"""What ``EventStore.status`` and ``EventStore.log_info`` report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys
from chatlog.eventstore.tiers import archive_tier

if TYPE_CHECKING:
    from chatlog.eventstore._topology import Topology
    from chatlog.eventstore.archive import Archive


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


async def read_status(topology: Topology, keys: Keys, partitions: int, url: str,
                      archive: Archive | None) -> StoreStatus:
    """The server, and per partition its tiers (see :meth:`EventStore.status`)."""
    info = await topology.server_info()
    server = "valkey" if "valkey_version" in info else "redis"
    version = str(info.get("valkey_version") or info.get("redis_version", "?"))
    parts = []
    for p in range(partitions):
        pipe = topology.redis.pipeline(transaction=False)
        key = keys.log(p)
        pipe.xlen(key)
        pipe.xrange(key, "-", "+", 1)
        pipe.xrevrange(key, "+", "-", 1)
        pipe.get(keys.horizon(p))
        pipe.memory_usage(key)
        length, first, last, horizon, size = await guard(pipe.execute())
        oldest = text(first[0][0]) if first else None
        newest = text(last[0][0]) if last else None
        tiers = [TierStatus("redis", 0, int(length), int(size or 0), oldest, newest)]
        if archive is not None:
            tiers.insert(0, TierStatus(
                "archive", *await asyncio.to_thread(archive_tier, archive, p)))
        parts.append(PartitionStatus(
            partition=p, key=key, length=int(length), first_position=oldest,
            last_position=newest, horizon=text(horizon) if horizon else None, tiers=tiers))
    return StoreStatus(server=server, version=version, url=url, partitions=parts)
