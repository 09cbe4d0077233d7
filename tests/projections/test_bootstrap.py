"""A projector on a fresh data dir with archived history builds its read model by the
columnar rebuild, then follows the log (it folded the whole log event by event)."""

from __future__ import annotations

from pathlib import Path

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from tests.helpers import eventually, message
from tests.projections._util import dump, fill
from tests.sealing import archiver


async def test_a_fresh_projector_builds_archived_history_by_a_rebuild(
        store: EventStore, model_path: Path, tmp_path: Path) -> None:
    store.archive = Archive.open(str(tmp_path / "archive"))
    await fill(store, ["Blog", "Docs"], threads=3, per_thread=10)
    assert await archiver(store, Archive.open(store.archive.url), hot=5, segment=20).run_pass()
    total = (await store.status()).events
    async with Projector(store, model_path, default_projections(), block=0.1) as pj:
        head = await store.append_one(message("Blog", "thread-0", "while it starts"))
        await pj.wait_for(head.partition, head.position, 30)
        # Only what came after the rebuild's checkpoint went through the live fold.
        assert pj.applied < total
        later = await store.append_one(message("Docs", "thread-9", "after it"))
        await eventually(lambda: pj.reached(later.partition, later.position), timeout=10,
                         what="the projector following the log after its rebuild")
    check = tmp_path / "check.sqlite"
    await build(store, check, default_projections())
    live, built = dump(model_path), dump(check)
    assert [r[:2] for r in live.pop("projector_checkpoints")] == [
        r[:2] for r in built.pop("projector_checkpoints")]
    assert live == built


async def test_a_fresh_projector_without_an_archive_catches_up_as_before(
        store: EventStore, model_path: Path) -> None:
    await fill(store, ["Blog"], threads=2, per_thread=3)
    async with Projector(store, model_path, default_projections(), block=0.1) as pj:
        head = await store.append_one(message("Blog", "thread-0", "last"))
        await pj.wait_for(head.partition, head.position, 30)
        assert pj.applied == (await store.status()).events
