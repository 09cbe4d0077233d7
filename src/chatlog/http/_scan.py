"""One forward pass over the log for a replay page or an SSE catch-up.

:class:`Scan` reads the partitions a filter needs after a cursor, decodes only
the entries that match, bounds the page by count and by bytes, and sizes each
read by what it has seen (entry size, share that matched). A reader confined to
some projects moves its cursor only past events it receives, so nothing it gets
depends on what other projects wrote. Such a reader reads its projects' index
(:mod:`chatlog.eventstore.project_index`), so its cost follows their events, not
the log's.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatlog.big_events import decode_unparsed
from chatlog.errors import PositionTrimmed
from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor
from chatlog.eventstore.project_index import indexed, read_projects
from chatlog.http._state import AppState

if TYPE_CHECKING:
    from chatlog.http.events import EventFilter

#: Entries a reader of every project looks at per page, matching or not (the page
#: says has_more).
SCAN_BUDGET = 10_000

async def own_projects(st: AppState, flt: EventFilter,
                       partitions: list[int]) -> dict[int, list[uuid.UUID]] | None:
    """For a reader confined to some projects, when the log keeps the per-project index:
    its projects in each of ``partitions`` (it reads their index, so its cost follows
    their events, not the partition's). None: read the partitions (a reader of every
    project, or a log older than the index)."""
    if flt.projects is None:
        return None
    async with st.reads:
        if not await indexed(st.store):
            return None
    return {p: [k for k in flt.projects if st.store.partition_of(k) == p] for p in partitions}


@dataclass
class Scanned:
    """What one :func:`scan` found: matching events (each with the cursor after it),
    the cursor to go on from, whether more may follow, and the bytes it returned."""

    found: list[tuple[RecordedEvent, Cursor]]
    cursor: Cursor
    more: bool
    bytes: int = 0


#: Entries asked of Redis per read at first; later reads size themselves by the
#: entries seen (their size, and how many matched), so big events are not
#: fetched a thousand at a time and a page reads little beyond its end.
FIRST_READ = 32
MAX_READ = 1000


class Scan:
    """One pass over the log after ``cursor`` for the events ``flt`` lets through: at
    most ``limit`` of them and (after the first) at most ``max_bytes`` of event bodies;
    only the matching entries are decoded.

    A reader of every project (``flt.projects`` None) advances its cursor past each
    entry it looks at and stops after ``budget`` entries (``more`` then says go on). A
    reader confined to some projects advances only past events it receives and has
    no budget: its pages, cursors and ``more`` do not depend on what other projects
    wrote (it may not read them; a cursor must not tell it when they wrote).
    """

    def __init__(self, st: AppState, cursor: Cursor, flt: EventFilter, limit: int,
                 max_bytes: int, budget: int = SCAN_BUDGET) -> None:
        self.st, self.flt, self.limit, self.max_bytes, self.budget = (
            st, flt, limit, max_bytes, budget)
        #: Where the reader goes on from, once the batches are read.
        self.cursor = cursor
        #: Whether more may follow, once the batches are read.
        self.more = False
        self.count = 0
        self.bytes = 0

    async def batches(self) -> AsyncGenerator[list[tuple[RecordedEvent, Cursor]], None]:
        """The matching events, one list per read of the log."""
        store, flt = self.st.store, self.flt
        parts = flt.partitions(store)
        wanted = parts if parts is not None else list(range(store.partitions))
        scoped = flt.projects is not None
        mine = await own_projects(self.st, flt, wanted)
        cursor = self.cursor
        read_from = list(cursor.positions)
        exhausted: set[int] = set()
        scanned = seen_bytes = matched = 0
        while len(exhausted) < len(wanted):
            for p in wanted:
                if p in exhausted:
                    continue
                ask = FIRST_READ
                if scanned:
                    avg = max(seen_bytes // scanned, 1)
                    share = max(matched / scanned, 0.01)
                    ask = min((self.max_bytes - self.bytes) // avg + 1,
                              int((self.limit - self.count) / share) + 1)
                ask = min(max(ask, 1), MAX_READ)
                if not scoped:
                    ask = min(ask, self.budget - scanned)
                    if ask <= 0:
                        self.cursor, self.more = cursor, True
                        return
                try:
                    async with self.st.reads:
                        entries = await (
                            read_projects(store, p, mine[p], read_from[p], ask)
                            if mine is not None else store.read_raw(p, read_from[p], ask))
                except PositionTrimmed as exc:  # name the whole cursor to resume from
                    raise await store.gone(exc, Cursor(list(read_from))) from None
                if len(entries) < ask:
                    exhausted.add(p)
                batch: list[tuple[RecordedEvent, Cursor]] = []
                for pos, fields in entries:
                    scanned += 1
                    size = len(fields.get(b"b", b""))
                    seen_bytes += size
                    position = pos.decode()
                    if flt.matches_raw(fields):
                        matched += 1
                        if self.count and self.bytes + size > self.max_bytes:
                            self.cursor, self.more = cursor, True
                            yield batch
                            return
                        cursor = cursor.advanced(p, position)
                        # A big body's data stays JSON (split off in the worker process).
                        batch.append((await decode_unparsed(p, pos, fields), cursor))
                        self.count += 1
                        self.bytes += size
                        if self.count >= self.limit:
                            self.cursor, self.more = cursor, True
                            yield batch
                            return
                    elif not scoped:
                        cursor = cursor.advanced(p, position)
                    read_from[p] = position
                self.cursor = cursor
                if batch:
                    yield batch
        self.cursor, self.more = cursor, False


async def scan(
    st: AppState, cursor: Cursor, flt: EventFilter, limit: int, *,
    max_bytes: int | None = None, budget: int = SCAN_BUDGET,
) -> Scanned:
    """All of one :class:`Scan` at once (the SSE catch-up reads it this way)."""
    pass_ = Scan(st, cursor, flt, limit,
                 max_bytes if max_bytes is not None else st.settings.replay_page_bytes, budget)
    async with contextlib.aclosing(pass_.batches()) as batches:
        found = [item async for batch in batches for item in batch]
    return Scanned(found, pass_.cursor, pass_.more, pass_.bytes)
