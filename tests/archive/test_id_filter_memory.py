"""The archived ids' filter stays bounded in Redis memory (issue 12's memory goal during a
long fill): its pieces expire with their generation, a generation's first piece is sized
by the ids the generation before got (not by its pieces, which doubled), pieces of
and pieces of generations past are deleted. Real Valkey."""

from __future__ import annotations

import time
from pathlib import Path

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archived_ids import BITS_PER_ID, FIRST_BLOCKS, RESERVE
from chatlog.eventstore.archiver import Archiver, HotWindow
from tests.archive.test_archived_ids import assert_retries_are_duplicates, fill

WINDOW = 600_000


async def reserve(store: EventStore, *filters: tuple[str, int]) -> list[tuple[str, int]]:
    """RESERVE room for ``(filter name, ids)`` each: the pieces and their blocks."""
    args = [x for name, n in filters for x in (name, n)]
    out = await store.redis.register_script(RESERVE)(keys=[store.keys.log(0)], args=args)
    return [(k.decode(), int(b)) for k, b in zip(out[::2], out[1::2], strict=True)]


def tag(store: EventStore) -> str:
    return store.keys.log(0)[: -len("log")]


async def pieces(store: EventStore) -> dict[str, int]:
    """Each filter piece's key and its expiry (PTTL, ms; -1: none)."""
    found = {}
    async for key in store.redis.scan_iter(match=f"{tag(store)}idf:*", count=1000):
        found[key.decode()] = int(await store.redis.pttl(key))
    return found


async def test_filter_pieces_keep_expiring_after_a_seal_ors_bits_into_them(
    store: EventStore, tmp_path: Path
) -> None:
    # Before: BITOP OR into a piece dropped its expiry; every piece lived forever, so
    # Redis memory grew with the log (~8 MiB every 10 minutes at 7,000 events/s).
    appended = await fill(store, 200)
    archive = Archive.open(str(tmp_path))
    store.archive = archive
    (result,) = await Archiver(store, archive, HotWindow(events=50, seconds=0, bytes=0),
                               segment_events=100).run_pass()
    assert result.archived == 150
    found = await pieces(store)
    assert found
    assert all(ttl > 0 for ttl in found.values()), found
    await assert_retries_are_duplicates(store, appended[:20])


async def test_a_generation_first_piece_fits_the_ids_of_the_one_before(
    store: EventStore,
) -> None:
    g = int(time.time() * 1000) // WINDOW
    cap = FIRST_BLOCKS * 64 // BITS_PER_ID
    # The generation before: one full piece, then a single id more made a second piece
    # twice as big.
    (one,) = await reserve(store, (f"{WINDOW}:{g - 1}", cap))
    (two,) = await reserve(store, (f"{WINDOW}:{g - 1}", 1))
    assert (one[1], two[1]) == (FIRST_BLOCKS, 2 * FIRST_BLOCKS)
    (first,) = await reserve(store, (f"{WINDOW}:{g}", 1))
    # Room for 5/4 of the ids before (cap + 1), not the 3 x FIRST blocks they took.
    assert first[1] == -(-(cap + 1) * 5 * BITS_PER_ID // (4 * 64))
    assert first[1] < 3 * FIRST_BLOCKS
    assert all(ttl > 0 for ttl in (await pieces(store)).values())


async def test_pieces_of_generations_past_are_deleted(store: EventStore) -> None:
    g = int(time.time() * 1000) // WINDOW
    # A filter two generations old whose piece lost its expiry (BITOP, before): its
    # directory entry and its piece, as an earlier version left them.
    old = f"{tag(store)}idf:{WINDOW}:{g - 2}:1"
    await store.redis.hset(f"{tag(store)}idp", f"idf:{WINDOW}:{g - 2}", f"{FIRST_BLOCKS}|10")
    await store.redis.setrange(old, FIRST_BLOCKS * 8 - 1, b"\0")
    await reserve(store, (f"{WINDOW}:{g}", 10))
    assert not await store.redis.exists(old)
    assert not await store.redis.hexists(f"{tag(store)}idp", f"idf:{WINDOW}:{g - 2}")
