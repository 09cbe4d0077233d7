"""An erasure beside an archiver pass on the same partition (two actors, each with its
own store connection and its own archive handle, as two nodes): the erasure rewrites
the archive under the archiver's lease, so the pass neither brings the erased
content back nor loses a segment it published."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatlog.erasure import Eraser
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.identity import normalize_project_id
from tests.erasure.test_erasure import files_holding
from tests.helpers import eventually, message


class PausedArchiver(Archiver):
    """An archiver whose pass stops at one step of its seal until told to go on."""

    def __init__(self, *args: Any, pause_at: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pause_at = pause_at
        self.reached = threading.Event()
        self.go = threading.Event()

    def _step(self, step: str) -> None:
        super()._step(step)
        if step == self.pause_at and not self.reached.is_set():
            self.reached.set()  # called in the pass's worker thread: blocking is fine
            self.go.wait(60)


async def whole_log(store: EventStore, archive: Archive) -> dict[bytes, list[bytes]]:
    archive.reload()
    out = dict(archive.read_flat(0, "0-0", 10**9))
    for pos, fields in await store.redis.xrange(store.keys.log(0)):
        out[pos] = [x for kv in fields.items() for x in kv]
    return out


# "verified": the pass read the thread's entries before they were XDEL'd and publishes
# them after the erasure rewrote the archive (content back). "renamed": the pass is
# between its rename and its manifest entry (the erasure removed the file as unlisted,
# or the pass's manifest dropped the erasure's).
@pytest.mark.parametrize("pause_at", ["verified", "renamed"])
async def test_erasure_and_archiver_pass_on_one_partition(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path, pause_at: str
) -> None:
    data = short_tmp / f"r{secrets.token_hex(4)}"
    server = valkey_factory(data / "valkey")
    node_a = await EventStore.open(server.url)  # the archiving node
    node_b = await EventStore.open(server.url)  # the erasing node
    marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog")
    try:
        for i in range(12):
            await node_b.append_one(message("Blog", "t1", f"{i} {marker}"))
            await node_b.append_one(message("Blog", "t2", f"{i} keep"))
            await node_b.append_one(message("Shop", "s1", f"{i} shop"))
        archiver = PausedArchiver(node_a, Archive.open(str(data / "archive")),
                                  HotWindow(events=6, seconds=0, bytes=0),
                                  segment_events=1_000, pause_at=pause_at)
        before = await whole_log(node_b, Archive.open(str(data / "archive")))
        passing = asyncio.ensure_future(archiver.run_pass([0]))
        await eventually(archiver.reached.is_set, timeout=30, what=f"the pass at {pause_at!r}")

        steps: list[str] = []
        eraser = Eraser(node_b, archive=Archive.open(str(data / "archive")),
                        on_step=steps.append)
        erasing = asyncio.ensure_future(eraser.erase(blog.key, blog.display, "t1"))
        await eventually(lambda: "redis" in steps or erasing.done(), timeout=30,
                         what="the erasure past its Redis step")
        archiver.go.set()
        [result] = await passing
        report = await erasing
        assert result.archived == 30  # read before the erasure: beyond a window of 6
        assert report.state == "done"
        assert files_holding(data, marker) == []
        after = await whole_log(node_b, Archive.open(str(data / "archive")))
        gone = {pos for pos, flat in before.items() if marker.encode() in b"".join(flat)}
        assert len(gone) == 12
        # Every other event is still there, in one tier or the other, unchanged.
        assert {p: f for p, f in after.items() if p in before} == {
            p: f for p, f in before.items() if p not in gone}
        # The pass sealed 10 of the thread's entries before they were XDEL'd: each tier
        # counts the copies it held.
        assert report.events_erased == {"redis": 12, "archive": 10}
    finally:
        archiver.go.set()
        await node_a.close()
        await node_b.close()
