"""What an archiver pass seals: the oldest entries of a partition's Redis stream beyond
its hot window, in segments, taken chunk by chunk (slices of what XRANGE gave, not
entry by entry: the position of an entry is parsed only where a bound needs it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import raise_if_cancelled

FlatEntry = tuple[bytes, list[bytes]]
#: Events read from Redis per XRANGE while a segment is gathered.
READ_BATCH = 5_000


class Scanning(Protocol):
    def scan_flat(self, partition: int, *, chunk: int = ...) -> AsyncIterator[list[Any]]: ...


def _key(position: bytes | str) -> tuple[int, int]:
    return parse_position(position.decode() if isinstance(position, bytes) else str(position))


def _ms(position: bytes | str) -> int:
    raw = position if isinstance(position, bytes) else str(position).encode()
    return int(raw[: raw.index(b"-")])


async def segments_beyond(store: Scanning, partition: int, *, count: int,
                          time_cut: int | None, floor: tuple[int, int],
                          segment_events: int) -> AsyncIterator[list[FlatEntry]]:
    """The stream's entries after ``floor`` to seal, oldest first, in lists of up to
    ``segment_events``: the first ``count``, and beyond them those older than
    ``time_cut`` (epoch ms; None: no age bound)."""
    taken = 0
    entries: list[FlatEntry] = []
    past_floor = False
    async for chunk in store.scan_flat(partition, chunk=READ_BATCH):
        raise_if_cancelled()
        start, stop = 0, len(chunk)
        if not past_floor:  # up to the floor: trimmed already (or deleted); skipped
            while start < stop and _key(chunk[start][0]) <= floor:
                start += 1
            past_floor = start < stop
        end = min(stop, start + max(count - taken, 0))
        if time_cut is not None:  # then what is older than the age cut
            while end < stop and _ms(chunk[end][0]) < time_cut:
                end += 1
        while start < end:
            take = min(end - start, segment_events - len(entries))
            part = chunk[start : start + take]
            if part and not isinstance(part[0][0], bytes):
                part = [(p if isinstance(p, bytes) else str(p).encode(), f) for p, f in part]
            entries.extend(part)
            start += take
            taken += take
            if len(entries) >= segment_events:
                yield entries
                entries = []
        if end < stop:
            break
    if entries:
        yield entries
