"""The single server's reads over lean connections: a range read checked against the
trim horizon (and the committed position), and one blocking ``XREAD``.

Kept beside :mod:`._topology` (whose ``SingleServer`` calls them) so each stays small.
"""

from __future__ import annotations

from typing import Any

from chatlog.eventstore._watermark import capped, committed_of
from chatlog.eventstore.codec import START
from chatlog.eventstore.connection import as_raised, guard
from chatlog.eventstore.keys import Keys
from chatlog.eventstore.lean import LeanConnection, LeanPool


def raise_any(replies: list[Any]) -> None:
    """Raise the first error among replies (a MULTI's parts fail as redis-py's would);
    one that means the server is not there right now (``-LOADING`` while it loads its
    AOF after a restart) as :class:`StoreUnavailable`, as :func:`guard` raises."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise as_raised(reply)


async def read_flat_checked(
    conn: LeanConnection, keys: Keys, partition: int, after: str, limit: int, *,
    committed: bool,
) -> tuple[bytes | None, list[Any]]:
    """``(horizon, entries)``: GET horizon [+ the committed position] + XRANGE in one
    MULTI, written at once (nothing else goes between them); entries capped at the
    committed position when ``committed``. The caller checks the horizon."""
    start = f"({after}" if after != START else "-"
    replies = await guard(conn.execute_many([
        ("MULTI",), ("GET", keys.horizon(partition)),
        *([("XREVRANGE", keys.committed(partition), "+", "-", "COUNT", 1)]
          if committed else []),
        ("XRANGE", keys.log(partition), start, "+", "COUNT", limit), ("EXEC",),
    ]))
    raise_any(replies)
    done = replies[-1]
    raise_any(done)
    horizon, entries = done[0], done[-1]
    if committed:
        entries = capped(entries, committed_of(done[1]))
    return horizon, entries


async def xread(
    pool: LeanPool, streams: dict[str, str], *, count: int, block_ms: int
) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """One ``XREAD COUNT BLOCK`` on a connection of its own: ``[(key, entries)]``."""
    conn = pool.acquire()
    try:
        reply = await conn.execute("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS",
                                   *streams.keys(), *streams.values())
    finally:
        await pool.release(conn)
    if not reply:
        return []
    return [(key, [(pos, dict(zip(flat[::2], flat[1::2], strict=True)))
                   for pos, flat in entries]) for key, entries in reply]


async def read_flat_first(
    conn: LeanConnection, keys: Keys, partition: int, after: str, limit: int, *,
    committed: bool,
) -> tuple[bytes | None, bytes | None, list[Any]]:
    """``(horizon, first, entries)``: GET horizon, the stream's first position [, the
    committed position] and XRANGE in one MULTI (nothing is trimmed between them),
    entries as flat field lists, capped at the committed position when
    ``committed``. What the tiered read needs to find the tier boundary, in one
    round trip and with no dict per entry. The caller checks the horizon."""
    start = f"({after}" if after != START else "-"
    log = keys.log(partition)
    replies = await guard(conn.execute_many([
        ("MULTI",), ("GET", keys.horizon(partition)), ("XRANGE", log, "-", "+", "COUNT", 1),
        *([("XREVRANGE", keys.committed(partition), "+", "-", "COUNT", 1)]
          if committed else []),
        ("XRANGE", log, start, "+", "COUNT", limit), ("EXEC",),
    ]))
    raise_any(replies)
    done = replies[-1]
    raise_any(done)
    horizon, head, entries = done[0], done[1], done[-1]
    if committed:
        entries = capped(entries, committed_of(done[2]))
    return horizon, (head[0][0] if head else None), entries
