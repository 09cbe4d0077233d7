"""A tail over partitions of one server (or one slot): one ``XREAD BLOCK`` at a time,
resumed after a dropped connection from the last entry yielded (moved out of
:mod:`._topology`, whose topologies call it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chatlog.errors import PositionTrimmed
from chatlog.eventstore.codec import START, Cursor, parse_position
from chatlog.eventstore.connection import UNAVAILABLE, raise_if_cancelled, stream_items, text
from chatlog.eventstore.keys import Keys

#: A stream entry as a tail yields it: (partition, position, fields).
RawEntry = tuple[int, bytes, dict[bytes, bytes]]
OnIdle = Callable[[], Awaitable[None]] | None

log = logging.getLogger("chatlog.eventstore.store")


def check_horizon(partition: int, after: str, horizon: bytes | None) -> None:
    """Raise :class:`PositionTrimmed` when ``after`` lies inside deliberately deleted
    history (``horizon``, the last deleted position, is past it). ``START`` is no
    position but "from the first event kept": it is never gone."""
    if horizon and after != START and parse_position(after) < parse_position(
            horizon.decode()):
        raise PositionTrimmed(partition, after, horizon.decode())


async def tail_streams(
    topology: Any, keys: Keys, cursor: Cursor, partitions: list[int], *, block: float,
    count: int, on_idle: OnIdle,
) -> AsyncIterator[list[RawEntry]]:
    """One XREAD BLOCK over ``partitions`` (one server, or one slot), forever.

    The positions are first checked against the trim horizons. A dropped
    connection is retried with backoff from the last entry yielded, so
    nothing is skipped or repeated.
    """
    committed = topology.committed_only
    by_key = {(keys.committed(p) if committed else keys.log(p)): p for p in partitions}
    log_partition = {keys.log(p): p for p in partitions}
    backoff = 0.05
    checked = False
    while True:
        try:
            if not checked:
                for p in partitions:
                    check_horizon(p, cursor.positions[p], await topology.raw_horizon(keys, p))
                checked = True
            streams = {k: cursor.positions[p] for k, p in by_key.items()}
            items = await topology.xread(streams, count=1 if committed else count,
                                         block_ms=int(block * 1000))
            if committed and items:
                reply, cursor = await _read_committed(topology, keys, cursor, by_key, items,
                                                      count)
                items = stream_items(reply)
            backoff = 0.05
        except UNAVAILABLE as exc:
            raise_if_cancelled()
            log.warning("tail: %s; retrying in %.2f s from %s", exc, backoff, cursor)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            checked = False
            continue
        raise_if_cancelled()
        if not items:
            if on_idle is not None:
                await on_idle()
            continue
        batch: list[RawEntry] = []
        for key, entries in items:
            p = log_partition[text(key)]
            batch.extend((p, pos, fields) for pos, fields in entries)
            if entries:
                cursor = cursor.advanced(p, text(entries[-1][0]))
        if batch:
            yield batch


async def _read_committed(
    topology: Any, keys: Keys, cursor: Cursor, by_key: dict[str, int], reply: Any,
    count: int,
) -> tuple[list[tuple[bytes, list[Any]]], Cursor]:
    """The log entries up to the committed positions an XREAD on them returned,
    as XREAD's ``[(log key, entries)]`` would give them (and the cursor moved
    past a committed range the log holds nothing of, so the tail does not spin)."""
    ranges = []
    pipe = topology.redis.pipeline(transaction=False)
    for key, entries in stream_items(reply):
        p = by_key[text(key)]
        upto = text(entries[-1][0])
        after = cursor.positions[p]
        ranges.append((p, upto))
        pipe.xrange(keys.log(p), f"({after}" if after != START else "-", upto, count)
    out = []
    for (p, upto), entries in zip(ranges, await pipe.execute(), strict=True):
        if entries:
            out.append((keys.log(p).encode(), entries))
        else:
            cursor = cursor.advanced(p, upto)
    return out, cursor
