"""Archiving in tests: the real archiver, with a small hot window and small segments.

``archiver(store, archive, hot, segment).run_pass()`` runs one pass of
:class:`chatlog.eventstore.archiver.Archiver` (lease, stage, verify, publish,
open-wait snapshot, index trim, XTRIM) over partition 0, so the readers are
tested against segments it wrote and a Redis it trimmed.

One thing the real archiver cannot do inside a test process is stop between two
of its steps: its fault hook (``crash_at``) ends the process, which
``tests/archive/test_archiver.py`` does to real ``chatlog archive`` and
``chatlog serve`` processes at each step. A reader test that needs an event in
both tiers at a precise boundary (``crash_before_trim``) therefore publishes the
oldest events with the archive's own API under the partition's real lease and
leaves Redis as it is: the state a crash between "published" and
"index-trimmed" leaves. The next real pass finishes that trim.
"""

from __future__ import annotations

import time
from typing import Any

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow, Lease
from tests.helpers import eventually


class Sealer:
    """One partition's real archiver with a hot window of ``hot`` events (it seals once
    the stream is over ``hot`` by a tenth; 0 seals everything) in segments of ``segment``."""

    def __init__(self, store: EventStore, archive: Archive, hot: int, segment: int = 15):
        self.store, self.archive, self.hot, self.segment = store, archive, hot, segment
        # hot=0 keeps nothing: the age bound (1 ms) with every event older than that
        window = HotWindow(hot, 0, 0) if hot else HotWindow(0, 0.001, 0)
        self.archiver = Archiver(store, archive, window, segment_events=segment)

    async def run_pass(self, crash_before_trim: bool = False) -> int:
        """One pass; how many events it sealed."""
        if crash_before_trim:
            return await self._publish_only()
        if not self.hot:
            newest: Any = await self.store.redis.xrevrange(self.store.keys.log(0), "+", "-", 1)
            if newest:
                ms = int(newest[0][0].split(b"-")[0])
                await eventually(lambda: time.time() * 1000 > ms + 3,
                                 what="the newest event to be older than the age bound")
        (result,) = await self.archiver.run_pass([0])
        assert not result.skipped or result.skipped == "within the hot window", result
        return result.archived

    async def _publish_only(self) -> int:
        """Publish the oldest events beyond ``hot`` (after the archive's newest) as one
        segment of at most ``segment``, and stop there, as a crash after "published"
        would; how many it published."""
        store, key = self.store, self.store.keys.log(0)
        self.archive.reload()
        newest = self.archive.newest(0)
        raw: Any = await store.redis.xrange(key, f"({newest}" if newest else "-", "+")
        raw = raw[: min(max(len(raw) - self.hot, 0), self.segment)]
        if not raw:
            return 0
        lease = Lease(store, 0)
        assert await lease.acquire(), "another archiver holds partition 0's lease"
        try:
            entries = [(pos, [x for kv in fields.items() for x in kv]) for pos, fields in raw]
            self.archive.publish(self.archive.stage(0, entries), fence=lease.token)
        finally:
            await lease.release()
        return len(raw)


def archiver(store: EventStore, archive: Archive, hot: int, segment: int = 15) -> Sealer:
    return Sealer(store, archive, hot, segment)
