"""How far behind the appends the archiver lets Redis get (issue 12's memory peak during a
fill): in its background loop (``chatlog serve``) a pass that archived something is
followed by the next one at once, not after ``interval`` (appends made while it ran may
be past the window already); a large window triggers a seal once exceeded by at most
``margin_cap`` events (10,000), not by a tenth (20,000 more held for a window of 200,000)."""

from __future__ import annotations

from pathlib import Path

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from tests.archive.test_archiver import fill
from tests.helpers import eventually


async def test_a_pass_that_archived_is_followed_by_the_next_at_once(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 60)
    archiver = Archiver(store, Archive.open(str(tmp_path)),
                        HotWindow(events=20, seconds=0, bytes=0), interval=3600)
    await archiver.start()
    try:
        # The first pass archives 40; the second runs at once (nothing to seal: it then
        # waits its hour); before this change the second came an interval later.
        await eventually(lambda: archiver.counters.passes >= 2, timeout=20,
                         what="the pass after one that archived")
        assert archiver.counters.events_archived == 40
        assert archiver.counters.failed_passes == 0
    finally:
        await archiver.stop()
    assert archiver.counters.passes == 2


async def test_a_large_window_seals_once_exceeded_by_the_margin_cap_not_a_tenth(
    store: EventStore, tmp_path: Path
) -> None:
    # A window of 100 stands for a large one: its tenth (10) above the cap (4 here).
    await fill(store, 105)
    archive = Archive.open(str(tmp_path))
    archiver = Archiver(store, archive, HotWindow(events=100, seconds=0, bytes=0),
                        margin_cap=4)
    (result,) = await archiver.run_pass()
    assert result.archived == 5  # down to the window (before: nothing below 111)
    assert await store.redis.xlen(store.keys.log(0)) == 100
    await fill(store, 4)  # 104: within the window and its margin
    (again,) = await archiver.run_pass()
    assert again.archived == 0 and again.skipped == "within the hot window"
    # A small window keeps its tenth (the cap only lowers it).
    small = Archiver(store, archive, HotWindow(events=60, seconds=0, bytes=0), margin_cap=100)
    await fill(store, 1)  # 105 > 60 + 6
    (third,) = await small.run_pass()
    assert third.archived == 45
