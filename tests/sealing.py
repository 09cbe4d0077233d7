"""Moving events from Redis into the archive in tests, the archiver's way.

The archiver itself (``chatlog.eventstore.archiver``) is built beside these
readers; this helper follows its protocol with the archive's public API, so
the readers are tested against real segments and a really trimmed Redis.
"""

from __future__ import annotations

from typing import Any

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.project_index import trim_project_indexes


class Sealer:
    """Moves a partition's oldest events beyond ``hot`` into segments of ``segment``,
    the archiver's way: publish the segment, pop its positions off the aggregates'
    index lists, then XTRIM the stream. (``crash_before_trim``: publish only, as
    after a crash between publishing and trimming.)"""

    def __init__(self, store: EventStore, archive: Archive, hot: int, segment: int = 15):
        self.store, self.archive, self.hot, self.segment = store, archive, hot, segment

    async def run_pass(self, crash_before_trim: bool = False) -> int:
        """One pass; how many events it sealed."""
        store, key = self.store, self.store.keys.log(0)
        self.archive.reload()
        newest = self.archive.newest(0)
        if newest is not None:  # finish what a pass that crashed before trimming left
            await self._trim(await store.redis.xrange(key, "-", newest))
        excess = int(await store.redis.xlen(key)) - self.hot
        sealed = 0
        while excess - sealed > 0:
            raw: Any = await store.redis.xrange(key, "-", "+", min(self.segment, excess - sealed))
            entries = [(pos, [x for kv in fields.items() for x in kv]) for pos, fields in raw]
            self.archive.publish(self.archive.stage(0, entries), fence=1)
            sealed += len(entries)
            if crash_before_trim:
                return sealed
            await self._trim(raw)
        return sealed

    async def _trim(self, raw: Any) -> None:
        """Pop ``raw``'s positions off their aggregates' index lists and the
        projects' index streams, then XTRIM them."""
        if not raw:
            return
        store = self.store
        per_aggregate: dict[bytes, int] = {}
        for _, fields in raw:
            per_aggregate[fields[b"a"]] = per_aggregate.get(fields[b"a"], 0) + 1
        for aggregate, n in per_aggregate.items():
            await store.redis.ltrim(store.keys.aggregate_index(0, aggregate.decode()), n, -1)
        await trim_project_indexes(store, 0, raw[-1][0].decode(), list(per_aggregate))
        ms, seq = parse_position(raw[-1][0].decode())
        await store.redis.xtrim(store.keys.log(0), minid=f"{ms}-{seq + 1}", approximate=False)


def archiver(store: EventStore, archive: Archive, hot: int, segment: int = 15) -> Sealer:
    return Sealer(store, archive, hot, segment)
