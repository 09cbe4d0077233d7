"""After erasing threads, the incremental read model equals a clean rebuild, whole
tables, every column: the project rows' derived fields (thread and message counts,
first and last times) are derived again as if the erased events had never been
appended, and a project left without threads has no row.

One column is left out by design: ``projector_checkpoints.events`` (see
:func:`tests.projections._util.checkpoints`); the positions are compared.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chatlog.erasure import Eraser
from chatlog.events import NewEvent, WorkflowCreated, WorkflowStarted
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from tests.projections._util import checkpoints, dump


def _message(project: str, thread: str, content: str, created_at: str) -> NewEvent:
    key = normalize_project_id(project)
    return NewEvent(id=uuid.uuid4(), type="message.appended", project=key.key,
                    project_name=key.display, aggregate_type="thread", aggregate_id=thread,
                    data={"thread_id": thread, "role": "user", "content": content,
                          "created_at": created_at})


@pytest.fixture
async def erased(store: EventStore, tmp_path: Path) -> tuple[Path, Path]:
    """A live read model that saw ``Blog``'s first and last threads and ``Solo``'s only
    thread erased, and a rebuild of the same log."""
    live = tmp_path / "live.sqlite"
    projector = Projector(store, live, default_projections())
    await projector.open()

    async def applied(partition: int, position: str) -> None:
        await projector.catch_up()

    try:
        # Blog: "early" holds the project's first message, "late" its last; "mid" stays.
        await store.append_one(_message("Blog", "early", "e1", "2020-01-01T00:00:00+00:00"))
        await store.append_one(_message("Blog", "mid", "m1", "2021-01-01T00:00:00+00:00"))
        await store.append_one(_message("Blog", "early", "e2", "2021-06-01T00:00:00+00:00"))
        await store.append_one(_message("Blog", "mid", "m2", "2022-01-01T00:00:00+00:00"))
        await store.append_one(_message("Blog", "late", "l1", "2023-01-01T00:00:00+00:00"))
        await store.append_one(_message("Solo", "only", "o1", "2020-01-01T00:00:00+00:00"))
        await store.append_one(_message("Docs", "d", "d1", "2020-01-01T00:00:00+00:00"))
        await projector.catch_up()
        eraser = Eraser(store, read_models=[live], wait_applied=applied)
        for project, thread in (("Blog", "early"), ("Blog", "late"), ("Solo", "only")):
            key = normalize_project_id(project)
            assert (await eraser.erase(key.key, key.display, thread)).state == "done"
        await projector.catch_up()
    finally:
        await projector.stop()
    result = await build(store, tmp_path / "built.sqlite", default_projections())
    return live, result.path


async def test_project_rows_are_derived_from_what_is_left(erased: tuple[Path, Path]) -> None:
    live, built = erased
    blog = str(normalize_project_id("Blog").key)
    inc = dump(live)
    # Defects 2 (created_ms) and the same class (updated_ms): from "mid", not the erased.
    assert [r for r in inc["projects"] if r[0] == blog] == [
        (blog, "Blog", 1, 2, 1609459200000, 1640995200000)]
    # Defect 3: Solo's only thread erased, no project row left.
    assert len(inc["projects"]) == 2
    assert inc["projects"] == dump(built)["projects"]


async def test_every_table_equals_a_rebuild(erased: tuple[Path, Path]) -> None:
    live, built = erased
    inc, rebuilt = dump(live), dump(built)
    assert checkpoints(inc) == checkpoints(rebuilt)
    assert inc == rebuilt


async def test_checkpoint_events_count_what_was_applied(erased: tuple[Path, Path]) -> None:
    """Defect 1, decided: the live count keeps the erased events it applied, as the
    stream's ``entries-added`` (the lag measure's other side) does; a rebuild counts
    what the log holds: here exactly the four erased events less."""
    live, built = erased
    counts = [r[2] for r in dump(live)["projector_checkpoints"]]
    assert sum(counts) == 7 + 3  # seven messages, three tombstones
    assert sum(r[2] for r in dump(built)["projector_checkpoints"]) == sum(counts) - 4


def _workflow(model: object, workflow: str) -> NewEvent:
    key = normalize_project_id("Flows")
    return NewEvent.of(model, project=key.key, project_name=key.display,  # type: ignore[arg-type]
                       aggregate_type="workflow", aggregate_id=workflow)


async def test_erased_threads_and_workflows_under_a_prefix_leave_no_rows(
        store: EventStore, tmp_path: Path) -> None:
    """An erasure of aggregates under a prefix (``Eraser.erase_aggregates``) that names
    threads or workflows: their rows went only from a rebuild, the live read model kept
    them (the tombstone's projection deleted rows of scopes project and thread only)."""
    live = tmp_path / "live.sqlite"
    projector = Projector(store, live, default_projections())
    await projector.open()

    async def applied(partition: int, position: str) -> None:
        await projector.catch_up()

    flows = normalize_project_id("Flows")
    deadline = datetime.now(UTC) + timedelta(seconds=300)
    try:
        for wf in ("w1", "w10", "w2"):
            await store.append_one(_workflow(WorkflowCreated(
                name=f"build {wf}", start_timeout=300, deadline=deadline), wf))
            await store.append_one(_workflow(WorkflowStarted(), wf))
        for thread in ("chat-a", "chat-b", "other"):
            await store.append_one(_message("Flows", thread, thread, "2021-01-01T00:00:00"))
        await projector.catch_up()
        eraser = Eraser(store, read_models=[live], wait_applied=applied)
        for kind, prefix in (("workflow", "w1"), ("thread", "chat-")):
            report = await eraser.erase_aggregates(flows.key, flows.display, kind, prefix)
            assert report.state == "done"
        await projector.catch_up()
    finally:
        await projector.stop()
    result = await build(store, tmp_path / "built.sqlite", default_projections())
    inc, rebuilt = dump(live), dump(result.path)
    assert [r[1] for r in inc["workflows"]] == ["w2"]
    assert [r[1] for r in inc["threads"]] == ["other"]
    assert checkpoints(inc) == checkpoints(rebuilt)
    assert inc == rebuilt
