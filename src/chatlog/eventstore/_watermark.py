"""The committed position (replicated high watermark) as readers use it, and lost positions.

See :mod:`.replication` for how the committed position advances, and
:mod:`._topology` for the reads and tails that stop at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatlog.eventstore.codec import START, Cursor, parse_position
from chatlog.eventstore.connection import text
from chatlog.eventstore.keys import Keys


def _pos(entry: Any) -> tuple[int, int]:
    return parse_position(text(entry[0]))


def committed_of(reply: Any) -> str:
    """The committed position from an ``XREVRANGE <committed> + - COUNT 1`` reply."""
    return text(reply[0][0]) if reply else START


def capped(entries: list[Any], committed: str) -> list[Any]:
    """The leading ``entries`` (in position order) at or before ``committed``."""
    if not entries:
        return entries
    limit = parse_position(committed)
    if _pos(entries[-1]) <= limit:
        return entries
    n = 0
    while n < len(entries) and _pos(entries[n]) <= limit:
        n += 1
    return entries[:n]


async def heads(redis: Any, keys: Keys, partitions: Sequence[int],
                committed_only: bool) -> list[str]:
    """Each partition's last position; with ``committed_only``, no further than its
    committed position (as far as readers go)."""
    pipe = redis.pipeline(transaction=False)
    for p in partitions:
        pipe.xrevrange(keys.log(p), "+", "-", 1)
        if committed_only:
            pipe.xrevrange(keys.committed(p), "+", "-", 1)
    rows = await pipe.execute()
    if not committed_only:
        return [text(r[0][0]) if r else START for r in rows]
    out = []
    for last, committed in zip(rows[::2], rows[1::2], strict=True):
        head, mark = (text(last[0][0]) if last else START), committed_of(committed)
        out.append(min(head, mark, key=parse_position))
    return out


async def missing(redis: Any, keys: Keys, cursor: Cursor, wanted: Sequence[int]) -> list[int]:
    """Those of ``wanted`` whose position in ``cursor`` the log no longer holds.

    Positions removed on purpose are not missing: at or before the trim
    horizon, or deleted by XDEL (as the integrations' deletes do; the stream
    remembers the largest id ever deleted, Redis >= 7).
    """
    if not wanted:
        return []
    pipe = redis.pipeline(transaction=False)
    for p in wanted:
        pos = cursor.positions[p]
        pipe.xrange(keys.log(p), pos, pos, 1)
        pipe.get(keys.horizon(p))
    replies = await pipe.execute()
    absent = []
    for i, p in enumerate(wanted):
        found, horizon = replies[2 * i], replies[2 * i + 1]
        if found:
            continue
        if horizon and parse_position(cursor.positions[p]) <= parse_position(text(horizon)):
            continue
        absent.append(p)
    if not absent:
        return []
    pipe = redis.pipeline(transaction=False)
    for p in absent:
        pipe.xinfo_stream(keys.log(p))
    infos = await pipe.execute(raise_on_error=False)
    gone = []
    for p, info in zip(absent, infos, strict=True):
        deleted = info.get("max-deleted-entry-id", info.get(b"max-deleted-entry-id")) \
            if isinstance(info, dict) else None
        if deleted and parse_position(cursor.positions[p]) <= parse_position(text(deleted)):
            continue
        gone.append(p)
    return gone
