"""What ``chatlog status`` and lag reports show of the log: plain records, and reading them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatlog.eventstore._topology import Topology
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys


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


async def read_status(redis: Any, topology: Topology, keys: Keys, partitions: int,
                      url: str) -> StoreStatus:
    """The server, and each partition's length, first and last positions, horizon."""
    info = await topology.server_info()
    server = "valkey" if "valkey_version" in info else "redis"
    version = str(info.get("valkey_version") or info.get("redis_version", "?"))
    parts = []
    for p in range(partitions):
        pipe = redis.pipeline(transaction=False)
        key = keys.log(p)
        pipe.xlen(key)
        pipe.xrange(key, "-", "+", 1)
        pipe.xrevrange(key, "+", "-", 1)
        pipe.get(keys.horizon(p))
        length, first, last, horizon = await guard(pipe.execute())
        parts.append(PartitionStatus(
            partition=p, key=key, length=int(length),
            first_position=text(first[0][0]) if first else None,
            last_position=text(last[0][0]) if last else None,
            horizon=text(horizon) if horizon else None,
        ))
    return StoreStatus(server=server, version=version, url=url, partitions=parts)
