"""The rebuild's columnar path: archived segments folded column by column (no event
object per row), then the hot tail, equal the incremental read model row for row,
for every kind of event the projections fold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from chatlog import offload
from chatlog.erasure import Eraser
from chatlog.events import (
    ApprovalRequested,
    JobEnqueued,
    MessageAppended,
    NewEvent,
    WorkflowApproved,
    WorkflowCreated,
    WorkflowStarted,
)
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationFold
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from tests.helpers import message
from tests.projections._util import checkpoints, dump
from tests.projections.test_contract import _one_of_each_type
from tests.sealing import archiver


def _message(project: str, thread: str, content: str, *, blob: bytes | None = None,
             **data: object) -> NewEvent:
    key = normalize_project_id(project)
    return NewEvent(id=uuid.uuid4(), type="message.appended", project=key.key,
                    project_name=key.display, aggregate_type="thread", aggregate_id=thread,
                    data={"thread_id": thread, "role": "user", "content": content, **data},
                    blob=blob)


def _workflow(model: object, workflow: str) -> NewEvent:
    key = normalize_project_id("Flows")
    return NewEvent.of(model, project=key.key, project_name=key.display,  # type: ignore[arg-type]
                       aggregate_type="workflow", aggregate_id=workflow)


async def _every_kind(store: EventStore, round_: int) -> None:
    """Messages of every shape, workflow and job events, and one of each known type."""
    deadline = datetime.now(UTC) + timedelta(seconds=300)
    for i in range(3):
        await store.append_one(message("Blog", f"t{i}", f"r{round_} plain {i}"))
        await store.append_one(_message("Blog", f"t{i}", f"r{round_} with metadata",
                                        metadata={"model": "m", "n": [1, 2.5, None]}))
        await store.append_one(message("Docs", "d1", f"r{round_} docs {i}", role="assistant"))
    await store.append_one(_message("Blog", "t0", "imported", created_at="2020-01-02T03:04:05"))
    await store.append_one(_message("Blog", "t1", "bad date", created_at="not a date"))
    await store.append_one(NewEvent(  # no role: skipped as invalid by both folds
        type="message.appended", project=normalize_project_id("Blog").key,
        project_name="Blog", aggregate_type="thread", aggregate_id="t2", data={"text": "x"}))
    # A big body: the live projector splits its metadata off in the worker process.
    big = {f"k{j}": "v" * 40 for j in range(offload.BIG // 40)}
    await store.append_one(_message("Blog", "t1", "big", metadata=big))
    # A body with a binary blob (framed): its JSON part is the message.
    await store.append_one(_message("Blog", "t2", "with a blob", blob=b"\x00\xffraw"))
    wf = f"wf-{round_}"
    await store.append_one(_workflow(WorkflowCreated(name="build", start_timeout=300,
                                                     deadline=deadline), wf))
    await store.append_one(_workflow(WorkflowStarted(), wf))
    await store.append_one(_workflow(JobEnqueued(job_id=f"job-{round_}", kind="k",
                                                 payload={"a": 1}, max_deliveries=3), wf))
    await store.append_one(_workflow(ApprovalRequested(approval_timeout=60,
                                                       deadline=deadline), wf))
    await store.append_one(_workflow(WorkflowApproved(), wf))
    for event in _one_of_each_type():
        await store.append([event])


async def test_archived_log_of_every_kind_rebuilds_equal(store: EventStore,
                                                         tmp_path: Path) -> None:
    """Archive, erase a thread (its archived rows rewritten away) and write to it again,
    archive again with an event left in both tiers: the rebuild equals the incremental
    model row for row (the thread's fresh history after the tombstone was deleted by
    the tombstone when they shared a chunk)."""
    archive = Archive.open(str(tmp_path / "archive"))
    store.archive = archive
    live = tmp_path / "live.sqlite"
    projector = Projector(store, live, default_projections(), batch_size=5)
    await projector.open()

    async def applied(partition: int, position: str) -> None:
        await projector.catch_up()

    try:
        await _every_kind(store, 0)
        await projector.catch_up()
        assert await archiver(store, Archive.open(archive.url), hot=8, segment=10).run_pass()
        blog = normalize_project_id("Blog")
        eraser = Eraser(store, archive=archive, read_models=[live], wait_applied=applied)
        assert (await eraser.erase(blog.key, blog.display, "t1")).state == "done"
        await _every_kind(store, 1)
        await archiver(store, Archive.open(archive.url), hot=6, segment=7).run_pass(
            crash_before_trim=True)
        await projector.catch_up()
    finally:
        await projector.stop()
    kinds = [type(item).__name__ async for item in store.scan(0, chunk=10)]
    assert "RecordBatch" in kinds and "list" in kinds  # both tiers, the archive columnar
    result = await build(store, tmp_path / "built.sqlite", default_projections(), chunk=9)
    inc, built = dump(live), dump(result.path)
    # The incremental model counted the erased events it applied; positions agree.
    assert checkpoints(built) == checkpoints(inc)
    assert built == inc
    assert len(inc["messages"]) > 20 and len(inc["workflow_history"]) >= 10
    assert any(r[5] == "with a blob" for r in inc["messages"])
    assert any(r[5] == "imported" for r in inc["messages"])


def _archived_batch(rows: list[tuple[str, str, str, int, bytes]]) -> object:
    """An archive batch (the columns :meth:`Archive.iter_batches` yields)."""
    import pyarrow as pa

    positions = [r[0] for r in rows]
    return pa.record_batch({
        "position": pa.array(positions, pa.string()),
        "event_id": pa.array([r[1] for r in rows], pa.string()),
        "aggregate": pa.array([r[2] for r in rows], pa.string()),
        "version": pa.array([r[3] for r in rows], pa.int64()),
        "type": pa.array(["message.appended"] * len(rows), pa.string()),
        "time": pa.array([int(p.split("-")[0]) for p in positions],
                         pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "body": pa.array([r[4] for r in rows], pa.binary()),
    })


@pytest.mark.parametrize("columnar", [True, False], ids=["archive-batch", "hot-entries"])
def test_a_message_with_a_blob_body_folds_like_the_live_path(columnar: bool) -> None:
    """A framed body (JSON + raw bytes, as ``NewEvent.blob`` stores it) is read through
    its JSON part, as ``decode_entry`` reads it (the fold raised on the frame before)."""
    from chatlog.eventstore.codec import frame_body

    project = str(normalize_project_id("Blog").key)
    doc = orjson.dumps({"n": "Blog", "d": MessageAppended(
        thread_id="t", role="user", content="hi").model_dump(mode="json"), "s": 1})
    body = frame_body(doc, b"\x00\xff")
    event_id = str(uuid.uuid4())
    fold = ConversationFold()
    if columnar:
        rows = fold.rows_batch(_archived_batch([("5-0", event_id, f"{project}/thread/t", 1,
                                                 body)]))
    else:
        rows = fold.rows([(b"5-0", [b"i", event_id.encode(), b"t", b"message.appended",
                                    b"a", f"{project}/thread/t".encode(), b"v", b"1",
                                    b"b", body])])
    assert rows == [(project, "t", 1, event_id, "user", "hi", "{}", 5, "5-0")]


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "child-process"])
@pytest.mark.parametrize("archived", [True, False], ids=["archive", "hot"])
async def test_a_thread_written_again_after_its_erasure_rebuilds_equal(
        store: EventStore, tmp_path: Path, archived: bool, processes: bool) -> None:
    """The tombstone and the thread's fresh history in one chunk: a rebuild applied the
    tombstone's deletes after the whole chunk's message rows, losing the new messages."""
    archive = Archive.open(str(tmp_path / "archive"))
    store.archive = archive
    live = tmp_path / "live.sqlite"
    projector = Projector(store, live, default_projections())
    await projector.open()

    async def applied(partition: int, position: str) -> None:
        await projector.catch_up()

    try:
        for i in range(4):
            await store.append_one(message("Blog", f"t{i % 2}", f"before {i}"))
        blog = normalize_project_id("Blog")
        eraser = Eraser(store, archive=archive, read_models=[live], wait_applied=applied)
        assert (await eraser.erase(blog.key, blog.display, "t1")).state == "done"
        for i in range(3):
            await store.append_one(message("Blog", "t1", f"after {i}"))
        if archived:
            await archiver(store, Archive.open(archive.url), hot=0, segment=100).run_pass()
        await projector.catch_up()
    finally:
        await projector.stop()
    result = await build(store, tmp_path / "built.sqlite", default_projections(),
                         processes=processes)
    inc, built = dump(live), dump(result.path)
    assert [r[5] for r in built["messages"] if r[1] == "t1"] == ["after 0", "after 1",
                                                                 "after 2"]
    assert checkpoints(built) == checkpoints(inc)
    assert built == inc
