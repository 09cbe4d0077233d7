"""One log across two tiers: archive segments, then the hot tail in Redis.

Every reader of the store (position reads, cursors, aggregate reads, tails)
sees archive + Redis as one log: in order, no gap, no repeat across the
boundary, also for an event a crash left in both tiers, and while the
archiver moves events and appends continue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from chatlog.errors import PositionTrimmed
from chatlog.eventstore import Cursor, EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.backward import read_raw_before
from chatlog.eventstore.codec import START
from chatlog.eventstore.migration import migrate
from chatlog.identity import normalize_project_id
from tests.helpers import eventually, message
from tests.sealing import archiver

THREADS = 3


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive.open(str(tmp_path / "archive"))


@pytest.fixture
async def tiered(store: EventStore, archive: Archive) -> EventStore:
    """The test's store, reading through ``archive`` (a second handle on the same files).

    Tests that also name ``store`` run on one server, the cluster and Redis 7.
    """
    store.archive = Archive.open(archive.url)
    return store


async def fill(store: EventStore, n: int, start: int = 0) -> list[str]:
    """Append messages ``start..start+n-1`` round-robin over THREADS threads; contents."""
    contents = []
    for i in range(start, start + n):
        await store.append_one(message(thread_id=f"t{i % THREADS}", content=f"m{i}"))
        contents.append(f"m{i}")
    return contents


async def redis_length(store: EventStore) -> int:
    return int(await store.redis.xlen(store.keys.log(0)))


async def test_position_reads_cross_the_boundary_once_in_order(
        store: EventStore, tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 50)
    await archiver(tiered, archive, hot=10).run_pass()
    assert await redis_length(tiered) == 10 and archive.count(0) == 40
    for limit in (7, 40, 1000):
        seen, after = [], START
        while page := await tiered.read(0, after, limit):
            seen += [e.data["content"] for e in page]
            after = page[-1].position
        assert seen == contents
    flat = await tiered.read_flat(0, START, 1000)
    assert len(flat) == 50 and len({p for p, _ in flat}) == 50
    events, cursor = await tiered.read_cursor(Cursor.start(1), 1000)
    assert [e.data["content"] for e in events] == contents
    assert cursor.positions[0] == events[-1].position


async def test_aggregate_reads_of_archived_aggregates(
        store: EventStore, tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 45)
    await archiver(tiered, archive, hot=8, segment=10).run_pass()
    key = normalize_project_id("Blog-Project").key
    for t in range(THREADS):
        events = await tiered.read_aggregate(key, "thread", f"t{t}")
        assert [e.version for e in events] == list(range(1, 16))
        assert [e.data["content"] for e in events] == contents[t::THREADS]
    # from a version in the archive, a limit that crosses into Redis
    events = await tiered.read_aggregate(key, "thread", "t1", from_version=11, limit=4)
    assert [e.version for e in events] == [11, 12, 13, 14]
    assert [e.data["content"] for e in events] == contents[1::THREADS][10:14]
    # wholly archived
    events = await tiered.read_aggregate(key, "thread", "t0", from_version=2, limit=3)
    assert [e.version for e in events] == [2, 3, 4]


async def test_an_event_left_in_both_tiers_is_read_once(
        tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 30)
    # As after a crash between publishing a segment and trimming Redis.
    assert await archiver(tiered, archive, hot=10, segment=20).run_pass(
        crash_before_trim=True) == 20
    assert await redis_length(tiered) == 30
    seen, after = [], START
    while page := await tiered.read(0, after, 7):
        seen += [e.data["content"] for e in page]
        after = page[-1].position
    assert seen == contents
    key = normalize_project_id("Blog-Project").key
    events = await tiered.read_aggregate(key, "thread", "t2")
    assert [e.version for e in events] == list(range(1, 11))


async def test_a_tail_from_the_archive_sees_every_event_once_while_archiving_and_appending(
        store: EventStore, tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 40)
    worker = archiver(tiered, archive, hot=5, segment=7)
    await worker.run_pass()
    seen: list[str] = []

    async def follow() -> None:
        async for batch in tiered.tail(Cursor.start(1), block=0.05, count=6):
            seen.extend(e.data["content"] for e in batch)

    task = asyncio.create_task(follow())
    try:
        for round_ in range(4):
            contents += await fill(tiered, 10, start=40 + 10 * round_)
            await worker.run_pass()
        await eventually(lambda: len(seen) >= len(contents), what="the tail to catch up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == contents


async def test_deletion_removes_from_both_tiers_and_only_deleted_cursors_are_gone(
        tiered: EventStore, archive: Archive) -> None:
    await fill(tiered, 30)
    before = [e.position for e in await tiered.read(0, START, 100)]
    await archiver(tiered, archive, hot=10, segment=8).run_pass()
    assert await tiered.trim(0, before[12]) == 12  # inside the archive (a segment straddles it)
    assert await tiered.horizon(0) == before[11]
    assert [e.position for e in await tiered.read(0)] == before[12:]
    with pytest.raises(PositionTrimmed) as gone:
        await tiered.read(0, before[3])
    assert gone.value.oldest_cursor == before[11]
    assert [e.position for e in await tiered.read(0, before[11])] == before[12:]
    archive.reload()
    assert archive.oldest(0) == before[12]
    # past the boundary: Redis loses its oldest too
    assert await tiered.trim(0, before[25]) == 13
    assert [e.position for e in await tiered.read(0)] == before[25:]
    archive.reload()
    assert archive.count(0) == 0 and await tiered.horizon(0) == before[24]


async def test_a_live_tail_left_a_whole_hot_window_behind_misses_nothing(
        tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 3)
    tail = tiered.tail(Cursor.start(1), block=0.05, count=2)
    seen = [e.data["content"] for e in await tail.__anext__()]
    seen += [e.data["content"] for e in await tail.__anext__()]  # caught up: next is XREAD
    assert seen == contents
    # While the consumer is busy, the log moves on and the archiver moves past its cursor.
    contents += await fill(tiered, 20, start=3)
    await archiver(tiered, archive, hot=3, segment=6).run_pass()
    try:
        async with asyncio.timeout(10):
            while len(seen) < len(contents):
                seen += [e.data["content"] for e in await tail.__anext__()]
    finally:
        await tail.aclose()  # type: ignore[attr-defined]
    assert seen == contents


async def test_migrate_copies_both_tiers(tiered: EventStore, archive: Archive,
                                         store_factory: Any, key_prefix: str) -> None:
    contents = await fill(tiered, 30)
    await archiver(tiered, archive, hot=7, segment=9).run_pass()
    target: EventStore = await store_factory(prefix=f"{key_prefix}-to")
    result = await migrate(tiered, target, batch=8)
    assert (result.copied, result.total) == (30, 30)
    assert [e.data["content"] for e in await target.read(0, START, 100)] == contents
    key = normalize_project_id("Blog-Project").key
    assert [e.version for e in await target.read_aggregate(key, "thread", "t2")] == list(
        range(1, 11))


async def test_reading_backwards_continues_into_the_archive(
        store: EventStore, tiered: EventStore, archive: Archive) -> None:
    contents = await fill(tiered, 30)
    sealer = archiver(tiered, archive, hot=7, segment=9)
    await sealer.run_pass()
    contents += await fill(tiered, 5, start=30)
    await archiver(tiered, archive, hot=9, segment=2).run_pass(crash_before_trim=True)
    seen: list[str] = []
    before: str | None = None
    while page := await read_raw_before(tiered, 0, before, 4):
        seen += [orjson.loads(fields[b"b"])["d"]["content"] for _, fields in page]
        before = page[-1][0].decode()
    assert seen == contents[::-1]


async def test_a_reader_with_a_stale_manifest_sees_a_deletion_made_elsewhere(
        tiered: EventStore, archive: Archive) -> None:
    """A server's reader keeps the manifest it read; a deletion made through another
    handle (``chatlog delete-before`` in another process) is still honoured by reads
    that the archive alone would serve: 410 inside it, the oldest kept from the start."""
    await fill(tiered, 40)
    assert await archiver(tiered, archive, hot=10, segment=8).run_pass() == 30
    pos = [p.decode() for p, _ in await tiered.read_flat(0, START, 100)]
    reader = tiered.archive  # its manifest is cached now
    tiered.archive = Archive.open(archive.url)
    assert await tiered.trim(0, pos[20]) == 20
    tiered.archive = reader
    with pytest.raises(PositionTrimmed):
        await tiered.read_flat(0, pos[5], 5)
    assert [p.decode() for p, _ in await tiered.read_flat(0, START, 5)] == pos[20:25]
    assert [p.decode() for p, _ in await tiered.read_flat(0, pos[25], 3)] == pos[26:29]
