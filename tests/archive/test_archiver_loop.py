"""The archiver's background loop (``chatlog serve``): a pass that archived something is
followed by the next one at once, not after ``interval`` (appends made while it ran may
be past the window already: sleeping let Redis hold up to an interval's appends more)."""

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
