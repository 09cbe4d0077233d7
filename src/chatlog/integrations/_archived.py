"""The integrations' reads of entries the archiver moved out of Redis.

The integrations find their entries by position through index keys of their
own (beside the log, never trimmed by the archiver); their scripts read the
entries from the Redis stream and name the positions the stream no longer
holds. Those were sealed into the archive before they left Redis (the
archiver publishes a segment before it trims), or were deleted on purpose;
:func:`archived_entries` finds the former in the store's archive tier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chatlog.eventstore.codec import parse_position, position_before
from chatlog.eventstore.store import EventStore

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive

#: A stream entry's fields as the flat list the server sends.
Flat = list[bytes]


def _text(position: bytes | str) -> str:
    return position.decode() if isinstance(position, bytes) else str(position)


def _find(archive: Archive, partition: int, positions: list[str]) -> dict[str, Flat]:
    found: dict[str, Flat] = {}
    for position in positions:
        rows = archive.read_flat(partition, position_before(position), 1)
        if rows and _text(rows[0][0]) == position:
            found[position] = list(rows[0][1])
    return found


def _find_reloading(archive: Archive, partition: int, positions: list[str]) -> dict[str, Flat]:
    found = _find(archive, partition, positions)
    if len(found) < len(positions):  # the cached manifest may predate the segment
        archive.reload()
        found.update(_find(archive, partition, [p for p in positions if p not in found]))
    return found


async def archived_entries(store: EventStore, partition: int,
                           positions: Iterable[bytes | str]) -> dict[str, Flat]:
    """The archived entries at ``positions`` of ``partition``, by position (text); a
    position in neither tier (deleted, erased) is absent from the answer."""
    wanted = sorted({_text(p) for p in positions}, key=parse_position)
    archive = store.archive
    if not wanted or archive is None:
        return {}
    return await asyncio.to_thread(_find_reloading, archive, partition, wanted)


def archived_entries_sync(store: EventStore, partition: int,
                          positions: Iterable[bytes | str]) -> dict[str, Flat]:
    """:func:`archived_entries` for blocking callers (file I/O in the calling thread)."""
    wanted = sorted({_text(p) for p in positions}, key=parse_position)
    archive = store.archive
    if not wanted or archive is None:
        return {}
    return _find_reloading(archive, partition, wanted)


def body_of(flat: Flat) -> bytes:
    """The body field (``b``) of an entry's flat field list."""
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == b"b":
            return flat[i + 1]
    return b""
