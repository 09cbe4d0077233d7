"""What ``chatlog status`` and lag reports show of the log: plain records, and reading them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatlog.eventstore._topology import Topology
from chatlog.eventstore._watermark import capped, committed_of
from chatlog.eventstore.added import entries_added
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys
from chatlog.eventstore.tiers import archive_tier

if TYPE_CHECKING:
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
    #: Entries in the Redis stream (the hot tier).
    length: int
    #: The first and last positions kept, in either tier.
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
    """One partition's log, both tiers, as seen from a reader at position ``after``."""

    partition: int
    #: Entries in the Redis stream now (the hot tier).
    length: int
    #: Entries ever added to the stream (``entries-added``; ``length`` on servers
    #: before Redis 7), so archived and trimmed entries still count.
    added: int
    #: The last position, in either tier (None when the log keeps no event).
    head: str | None
    #: The first position after ``after``, in either tier (None when caught up).
    next_position: str | None
    #: The first position kept, in either tier (None when the log keeps no event).
    first: str | None = None
    #: Per tier: the archive's segments first (when there is an archive), then Redis.
    tiers: list[TierStatus] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Events kept in every tier (an event a crash left in both counts twice)."""
        return sum(t.events for t in self.tiers) if self.tiers else self.length


def _earliest(*positions: str | None) -> str | None:
    kept = [p for p in positions if p is not None]
    return min(kept, key=parse_position) if kept else None


def _latest(*positions: str | None) -> str | None:
    kept = [p for p in positions if p is not None]
    return max(kept, key=parse_position) if kept else None


def archive_after(archive: Archive, partition: int, after: str) -> tuple[
        tuple[int, int, int, str | None, str | None], str | None]:
    """The archive tier of ``partition`` (manifest re-read) and its first position after
    ``after`` (None: none), read from the manifest when a segment starts after it."""
    tier = archive_tier(archive, partition)
    key = parse_position(after)
    for segment in archive.segments(partition):
        if parse_position(segment.last) <= key:
            continue
        if parse_position(segment.first) > key:
            return tier, segment.first
        page = archive.read_flat(partition, after, 1)
        return tier, text(page[0][0]) if page else None
    return tier, None


async def read_status(redis: Any, topology: Topology, keys: Keys, partitions: int,
                      url: str, archive: Archive | None = None) -> StoreStatus:
    """The server, and per partition and tier: segments, events, bytes, oldest, newest
    (plus the Redis stream's length and the deletion horizon)."""
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
        pipe.memory_usage(key)
        length, first, last, horizon, size = await guard(pipe.execute())
        oldest = text(first[0][0]) if first else None
        newest = text(last[0][0]) if last else None
        tiers = [TierStatus("redis", 0, int(length), int(size or 0), oldest, newest)]
        if archive is not None:
            cold = await asyncio.to_thread(archive_tier, archive, p)
            tiers.insert(0, TierStatus("archive", *cold))
            oldest, newest = _earliest(oldest, cold[3]), _latest(newest, cold[4])
        parts.append(PartitionStatus(
            partition=p, key=key, length=int(length), first_position=oldest,
            last_position=newest, horizon=text(horizon) if horizon else None, tiers=tiers,
        ))
    return StoreStatus(server=server, version=version, url=url, partitions=parts)


async def read_log_info(redis: Any, topology: Topology, keys: Keys, partition: int,
                        after: str, archive: Archive | None = None) -> LogInfo:
    """See :meth:`EventStore.log_info`."""
    key = keys.log(partition)
    pipe = redis.pipeline(transaction=False)
    pipe.xrevrange(key, "+", "-", 1)
    pipe.xrange(key, f"({after}" if after != START else "-", "+", 1)
    pipe.xlen(key)
    pipe.xrange(key, "-", "+", 1)
    pipe.memory_usage(key)
    if topology.committed_only:
        pipe.xrevrange(keys.committed(partition), "+", "-", 1)
    last, first_pending, length, first, size, *mark = await guard(pipe.execute())
    if mark:  # readers go no further than the committed position
        upto = committed_of(mark[0])
        if last and parse_position(text(last[0][0])) > parse_position(upto):
            last = [(upto.encode(), {})] if upto != START else []
        first_pending = capped(first_pending, upto)
    added = await guard(entries_added(redis, key)) or int(length)
    head = text(last[0][0]) if last else None
    pending = text(first_pending[0][0]) if first_pending else None
    oldest = text(first[0][0]) if first else None
    tiers = [TierStatus("redis", 0, int(length), int(size or 0), oldest, head)]
    if archive is not None:
        cold, cold_next = await asyncio.to_thread(archive_after, archive, partition, after)
        tiers.insert(0, TierStatus("archive", *cold))
        head, oldest = _latest(head, cold[4]), _earliest(oldest, cold[3])
        pending = _earliest(pending, cold_next)
    return LogInfo(partition=partition, length=int(length), added=added, head=head,
                   next_position=pending, first=oldest, tiers=tiers)
