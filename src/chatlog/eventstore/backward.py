"""Reading a partition backwards, newest first: where the console's event browser starts.

One ``XREVRANGE`` with a count per call, so the newest page costs the same
whatever the log's length. It names one key, so it runs on the node that holds
the partition on a cluster too.
"""

from __future__ import annotations

from typing import Any

from chatlog.errors import InvalidInput
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.connection import guard
from chatlog.eventstore.store import EventStore


async def read_raw_before(
    store: EventStore, partition: int, before: str | None = None, limit: int = 1000
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries of ``partition`` before position ``before`` (``None``: from the newest),
    newest first, at most ``limit``, undecoded.

    Reading backwards never raises ``PositionTrimmed``: it ends at the oldest event kept.
    """
    if not 0 <= partition < store.partitions:
        raise InvalidInput(
            f"partition {partition} does not exist; this log has partitions "
            f"0..{store.partitions - 1}"
        )
    if before is not None:
        parse_position(before)
        if before == START:
            return []
    end = "+" if before is None else f"({before}"
    entries: Any = await guard(store.redis.xrevrange(store.keys.log(partition), end, "-", limit))
    return list(entries)
