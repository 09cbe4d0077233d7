"""A page of the tiered read served by the archive alone (see :func:`.tiers.read_both`).

Paging through archived history, each page is one read of decoded row groups
(a row group holds thousands of events, a page one thousand) and one ``GET``
of the deletion horizon. A thread hop per page cost more than the read itself
saves by leaving the event loop (measured: the tiered loop ran ~0.92x the
Redis read rate with it), so a page whose row groups are decoded already is
built on the loop, the ``GET`` written first so its round trip overlaps the
build; only a page that must read a row group from the file goes to a thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from chatlog.eventstore._tail import check_horizon
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.keys import Keys

if TYPE_CHECKING:
    from chatlog.eventstore._topology import Topology
    from chatlog.eventstore.archive import Archive

#: A stream entry with its fields as the flat list the server sends.
FlatEntry = tuple[bytes, list[bytes]]
#: The most entries a page built on the loop holds (a bigger read, a thread's work: it
#: would hold the loop up for tens of milliseconds).
ON_LOOP = 2000


def deleted_since(archive: Archive, partition: int, horizon: bytes | None) -> bool:
    """Whether the cached manifest may predate the deletion ``horizon`` records."""
    oldest = archive.oldest(partition)
    return horizon is not None and oldest is not None and (
        parse_position(oldest) <= parse_position(text(horizon)))


def holds_after(archive: Archive, partition: int, after: str) -> bool:
    """Whether the archive (as last seen) holds positions after ``after``."""
    newest = archive.newest(partition)
    return newest is not None and (
        after == START or parse_position(after) < parse_position(newest))


def archive_page(archive: Archive, partition: int, after: str, limit: int,
                 horizon: bytes | None) -> list[FlatEntry]:
    """The archive's page after ``after`` when it may serve it alone (empty otherwise).
    The manifest is re-read first when it predates the deletion that ``horizon``
    (the last position deleted) records. File I/O: call it in a thread."""
    if deleted_since(archive, partition, horizon):
        archive.reload()  # a deletion made elsewhere since the manifest was read
    return archive.read_flat(partition, after, limit) if holds_after(
        archive, partition, after) else []


async def cold_page(topology: Topology, keys: Keys, archive: Archive, partition: int,
                    after: str, limit: int) -> list[FlatEntry]:
    """:func:`archive_page` checked against the deletion horizon (read meanwhile, one
    GET); built on the loop when its row groups are decoded already and it is a page
    (at most :data:`ON_LOOP` entries)."""
    horizon_read = asyncio.ensure_future(guard(topology.raw_horizon(keys, partition)))
    try:
        await asyncio.sleep(0)  # the GET goes out before the page is built
        page = archive.read_flat_decoded(partition, after, limit) if limit <= ON_LOOP else None
        if page is None:
            page = await asyncio.to_thread(archive_page, archive, partition, after, limit,
                                           None)
        horizon = await horizon_read
    finally:
        if not horizon_read.done():
            horizon_read.cancel()
            await asyncio.gather(horizon_read, return_exceptions=True)
    check_horizon(partition, after, horizon)
    if deleted_since(archive, partition, horizon):  # read before it: read it again
        page = await asyncio.to_thread(archive_page, archive, partition, after, limit, horizon)
    return page
