"""``log_info``, ``status`` and the lag figures count both tiers (issue 12): the first
and last position kept, events per tier and in all, and where a reader stands, also
when its cursor lies in the archive or Redis holds nothing at all."""

from __future__ import annotations

from pathlib import Path

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.eventstore.codec import Cursor
from chatlog.projections.lag import measure_lag
from tests.helpers import eventually, message


async def test_log_info_status_and_lag_count_both_tiers(store: EventStore,
                                                        tmp_path: Path) -> None:
    done = [await store.append_one(message(content=f"m{i}")) for i in range(30)]
    pos = [r.position for r in done]
    archive = Archive.open(str(tmp_path / "archive"))
    (sealed,) = await Archiver(store, archive, HotWindow(10, 0, 0), segment_events=8).run_pass()
    assert sealed.archived == 20
    store.archive = archive

    info = await store.log_info(0)
    assert (info.first, info.head, info.next_position) == (pos[0], pos[-1], pos[0])
    assert [(t.tier, t.events, t.oldest, t.newest) for t in info.tiers] == [
        ("archive", 20, pos[0], pos[19]), ("redis", 10, pos[20], pos[-1])]
    assert (info.events, info.length, info.added) == (30, 10, 30)
    assert (await store.log_info(0, pos[4])).next_position == pos[5]  # inside a segment
    assert (await store.log_info(0, pos[7])).next_position == pos[8]  # a segment's first
    assert (await store.log_info(0, pos[19])).next_position == pos[20]  # Redis's first
    assert (await store.log_info(0, pos[-1])).next_position is None

    (part,) = (await store.status()).partitions
    assert (part.first_position, part.last_position, part.events) == (pos[0], pos[-1], 30)

    lag = await measure_lag(store, Cursor.start(1), [0])
    assert (lag.caught_up, lag.events_behind) == (False, 30)
    assert lag.partitions[0].head == pos[-1]
    lag = await measure_lag(store, Cursor([pos[9]]), [10])
    assert (lag.caught_up, lag.events_behind) == (False, 20)


async def test_lag_is_not_caught_up_when_redis_holds_nothing(store: EventStore,
                                                            tmp_path: Path) -> None:
    """Everything archived (an age bound): a reader at the start is 12 events behind,
    not caught up because the Redis stream is empty."""
    done = [await store.append_one(message(content=f"m{i}")) for i in range(12)]
    archive = Archive.open(str(tmp_path / "archive"))
    archiver = Archiver(store, archive, HotWindow(0, 0.001, 0))
    sealed = 0

    async def all_sealed() -> bool:
        # The newest events may be younger than the 1 ms bound at the first pass.
        nonlocal sealed
        (result,) = await archiver.run_pass()
        sealed += result.archived
        return await store.redis.xlen(store.keys.log(0)) == 0

    await eventually(all_sealed, what="every event past the 1 ms age bound archived")
    assert sealed == 12
    store.archive = archive

    info = await store.log_info(0)
    assert (info.first, info.head, info.events) == (done[0].position, done[-1].position, 12)
    lag = await measure_lag(store, Cursor.start(1), [0])
    assert (lag.caught_up, lag.events_behind) == (False, 12)
    assert lag.partitions[0].head == done[-1].position
    lag = await measure_lag(store, Cursor([done[-1].position]), [12])
    assert (lag.caught_up, lag.events_behind) == (True, 0)
