"""Start-up from a checkpoint, not from the whole log.

A restarted orchestrator learns its open waits and pending deadlines from the
workflows read model (which commits with its checkpoint) or, when that is
missing or behind, from the open-wait snapshot the archiver keeps with the
archive, and reads only the log after it; a deadline that passed while
everything was down still times out, even when the history that opened the
wait is no longer in the log. Archiving is done by the real archiver.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.eventstore.codec import START
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator
from chatlog.projections.projector import Projector
from chatlog.settings import Settings
from tests.helpers import eventually, message


async def _project(store: EventStore, settings: Settings) -> str:
    """Bring the read model up to the head; the checkpoint of partition 0."""
    pj = Projector(store, settings.sqlite_path)
    try:
        await pj.catch_up()
        return pj.checkpoint.positions[0]
    finally:
        await pj.stop()


def _spy_reads(store: EventStore) -> list[str]:
    """Record the position every flat read starts after (the orchestrator's catch-up)."""
    seen: list[str] = []
    read_flat = store.read_flat

    async def spy(partition: int, after: str = START, limit: int = 1000) -> Any:
        seen.append(after)
        return await read_flat(partition, after, limit)

    store.read_flat = spy  # type: ignore[method-assign]
    return seen


async def _types_of(store: EventStore, workflow_id: str) -> list[str]:
    events = await store.read(0, START, 10_000)
    return [e.type for e in events if e.aggregate_id == workflow_id]


async def test_restart_reads_the_log_after_the_checkpoint_only(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey,
) -> None:
    first: Orchestrator = await orchestrator_factory(start=False)  # commands need no start
    await first.create_workflow(project, workflow_id="wf-long", start_timeout=60)
    await first.create_workflow(project, workflow_id="wf-appr", start_timeout=60)
    await first.start_workflow(project, "wf-appr")
    await first.request_approval(project, "wf-appr", timeout=60)
    for i in range(20):
        await store.append_one(message(content=f"m{i}"))
    checkpoint = await _project(store, settings)
    # After the checkpoint, before the restart: a wait the read model does not know yet.
    await first.create_workflow(project, workflow_id="wf-new", start_timeout=0.05)

    reads = _spy_reads(store)
    second: Orchestrator = await orchestrator_factory()
    assert reads and reads[0] == checkpoint and START not in reads
    assert {"wf-long", "wf-appr"} <= {w.workflow_id for w in second._timers.open.values()}

    async def new_timed_out() -> bool:
        return "workflow.timed_out" in await _types_of(store, "wf-new")

    await eventually(new_timed_out, what="wf-new (created after the checkpoint) to time out")
    # The restored waits behave as before the restart.
    view = await second.start_workflow(project, "wf-long")
    assert view.state == "running"
    view = await second.decide_approval(project, "wf-appr", approved=True)
    assert view.state == "approved"
    await eventually(lambda: second.open_waits == 0, what="no open wait left")


async def test_a_deadline_that_passed_while_down_times_out_with_its_history_deleted(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey,
) -> None:
    first: Orchestrator = await orchestrator_factory(start=False)
    await first.create_workflow(project, workflow_id="wf-late", start_timeout=0.05)
    await first.create_workflow(project, workflow_id="wf-later", start_timeout=60)
    for i in range(5):
        await store.append_one(message(content=f"m{i}"))
    await _project(store, settings)
    cut = await store.append_one(message(content="the first event kept"))
    assert await store.trim(0, cut.position) == 7  # the workflows' history is gone

    second: Orchestrator = await orchestrator_factory()
    assert "wf-later" in {w.workflow_id for w in second._timers.open.values()}

    async def late_failed() -> list[str]:
        types = [e.type for e in await store.read(0) if e.aggregate_id == "wf-late"]
        return types if types == ["workflow.timed_out", "workflow.failed"] else []

    await eventually(late_failed, what="wf-late to time out after the restart")
    # wf-later still waits, with the time it has left (once the tailer read the expiry)
    await eventually(lambda: second.open_waits == 1, what="wf-late's wait closed")


async def test_restart_with_open_workflows_whose_history_is_archived(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey, tmp_path: Path,
) -> None:
    """Waits and deadlines behave as before the archive; the workflows read through it."""
    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    await first.create_workflow(project, workflow_id="wf-late", start_timeout=0.05)
    await first.create_workflow(project, workflow_id="wf-long", start_timeout=60)
    await first.create_workflow(project, workflow_id="wf-appr", start_timeout=60)
    await first.start_workflow(project, "wf-appr")
    await first.request_approval(project, "wf-appr", timeout=60)
    for i in range(10):
        await store.append_one(message(content=f"m{i}"))
    await _project(store, settings)
    (sealed,) = await Archiver(store, Archive.open(store.archive.url), HotWindow(2, 0, 0),
                               segment_events=5).run_pass()
    assert sealed.archived == 13

    reads = _spy_reads(store)
    second: Orchestrator = await orchestrator_factory()
    assert START not in reads

    async def late_failed() -> bool:
        events = await store.read_aggregate(project.key, "workflow", "wf-late")
        return [e.type for e in events][-2:] == ["workflow.timed_out", "workflow.failed"]

    await eventually(late_failed, what="wf-late to time out after the restart")
    assert (await second.start_workflow(project, "wf-long")).state == "running"
    assert (await second.decide_approval(project, "wf-appr", approved=True)).state == "approved"
    history = await store.read_aggregate(project.key, "workflow", "wf-appr")
    assert [e.version for e in history] == [1, 2, 3, 4]


async def _open_workflows_then_archive(first: Orchestrator, store: EventStore,
                                       project: ProjectKey) -> str:
    """wf-late (its deadline passes at once), wf-long, wf-appr (awaiting approval),
    messages between; then the real archiver seals all but the last 2 events in
    segments of 4. The last archived position."""
    await first.create_workflow(project, workflow_id="wf-late", start_timeout=0.05)
    await first.create_workflow(project, workflow_id="wf-long", start_timeout=60)
    for i in range(5):
        await store.append_one(message(content=f"m{i}"))
    await first.create_workflow(project, workflow_id="wf-appr", start_timeout=60)
    await first.start_workflow(project, "wf-appr")
    await first.request_approval(project, "wf-appr", timeout=60)
    await first.create_workflow(project, workflow_id="wf-done", start_timeout=60)
    await first.cancel(project, "wf-done")
    for i in range(5):
        await store.append_one(message(content=f"n{i}"))
    assert store.archive is not None
    length = await store.redis.xlen(store.keys.log(0))
    (sealed,) = await Archiver(store, store.archive, HotWindow(2, 0, 0),
                               segment_events=4).run_pass()
    assert sealed.archived == length - 2 and sealed.segments == -(-(length - 2) // 4)
    newest = store.archive.newest(0)
    assert newest is not None
    return newest


async def test_a_data_dir_without_read_model_starts_from_the_archive_snapshot(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey, tmp_path: Path,
) -> None:
    """No read model (a new node, a lost disk): the open waits come from the snapshot
    the archiver wrote with the segments, and only the hot tail is read."""
    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    newest = await _open_workflows_then_archive(first, store, project)
    assert not settings.sqlite_path.exists()

    reads = _spy_reads(store)
    second: Orchestrator = await orchestrator_factory()
    assert reads and reads[0] == newest and START not in reads
    assert {w.workflow_id for w in second._timers.open.values()} >= {"wf-long", "wf-appr"}
    assert "wf-done" not in {w.workflow_id for w in second._timers.open.values()}

    async def late_failed() -> bool:
        events = await store.read_aggregate(project.key, "workflow", "wf-late")
        return [e.type for e in events][-2:] == ["workflow.timed_out", "workflow.failed"]

    await eventually(late_failed, what="wf-late to time out after the restart")
    assert (await second.start_workflow(project, "wf-long")).state == "running"
    assert (await second.decide_approval(project, "wf-appr", approved=True)).state == "approved"
    await eventually(lambda: second.open_waits == 0, what="no open wait left")


async def test_a_read_model_behind_the_archive_starts_from_the_snapshot(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey, tmp_path: Path,
) -> None:
    """A read model whose checkpoint lies inside the archive: the further snapshot wins."""
    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    await store.append_one(message(content="before the read model's checkpoint"))
    early = await _project(store, settings)
    newest = await _open_workflows_then_archive(first, store, project)
    assert early < newest

    reads = _spy_reads(store)
    second: Orchestrator = await orchestrator_factory()
    assert reads and reads[0] == newest
    assert {w.workflow_id for w in second._timers.open.values()} >= {
        "wf-late", "wf-long", "wf-appr"} or second.open_waits >= 2


async def test_an_erased_projects_open_waits_leave_the_snapshot(
    orchestrator_factory: Callable[..., Any], store: EventStore, project: ProjectKey,
    tmp_path: Path,
) -> None:
    """Erasing a project from the archive drops its open waits from the snapshot too, so
    a restart from it never times out (writes to) a workflow of an erased project."""
    from chatlog.eventstore.archive import erase_rows
    from chatlog.eventstore.waits import read_snapshot
    from chatlog.identity import normalize_project_id

    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    other = normalize_project_id("Other-Project")
    await first.create_workflow(other, workflow_id="wf-other", start_timeout=60)
    await _open_workflows_then_archive(first, store, project)
    snap = read_snapshot(store.archive, 0)
    assert snap is not None
    assert {w["workflow_id"] for w in snap.waits.values()} == {
        "wf-other", "wf-late", "wf-long", "wf-appr"}

    erase_rows(store.archive, 0, str(project.key), None, f"{2**48}-0")
    snap = read_snapshot(store.archive, 0)
    assert snap is not None and [w["workflow_id"] for w in snap.waits.values()] == ["wf-other"]


async def test_a_snapshot_that_lags_is_completed_from_the_archived_segments(
    orchestrator_factory: Callable[..., Any], store: EventStore, project: ProjectKey,
    tmp_path: Path,
) -> None:
    """No snapshot for the segments already archived (an archive older than snapshots, or
    a pass that crashed before writing it): the next pass folds those segments first."""
    from chatlog.eventstore.waits import read_snapshot

    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    await _open_workflows_then_archive(first, store, project)
    (tmp_path / "archive" / "snapshots" / "partition=0.json").unlink()
    for i in range(6):
        await store.append_one(message(content=f"later {i}"))
    (sealed,) = await Archiver(store, store.archive, HotWindow(2, 0, 0)).run_pass()
    assert sealed.archived == 6
    snap = read_snapshot(store.archive, 0)
    assert snap is not None and snap.position == store.archive.newest(0)
    assert {w["workflow_id"] for w in snap.waits.values()} == {"wf-late", "wf-long", "wf-appr"}

    reads = _spy_reads(store)
    second: Orchestrator = await orchestrator_factory()
    assert reads[0] == snap.position
    assert {w.workflow_id for w in second._timers.open.values()} >= {"wf-long", "wf-appr"}


async def test_a_lost_job_push_before_the_snapshot_is_queued_on_a_node_without_read_model(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey, tmp_path: Path,
) -> None:
    """A job enqueued (in the log) whose push was lost, then archived: a node without a
    read model starts from the archive's snapshot, past that event, and still queues
    the job (it re-checks the last day's jobs in the archive, as it does in the read
    model when it starts from there)."""
    from chatlog.events import JobEnqueued, NewEvent
    from chatlog.orchestrator.job_records import job_payload

    store.archive = Archive.open(str(tmp_path / "archive"))
    first: Orchestrator = await orchestrator_factory(start=False)
    await first.create_workflow(project, workflow_id="wf-jobs", start_timeout=60)
    await first.start_workflow(project, "wf-jobs")
    # as if enqueue_job crashed after appending job.enqueued, before pushing the job
    lost = JobEnqueued(job_id="job-lost-1", kind="lost", payload={"n": 1}, max_deliveries=3)
    await store.append_one(NewEvent.of(lost, project=project.key, project_name=project.display,
                                       aggregate_type="workflow", aggregate_id="wf-jobs"))
    newest = await _open_workflows_then_archive(first, store, project)
    assert not settings.sqlite_path.exists()
    assert await job_payload(store, project, "job-lost-1") is None

    reads = _spy_reads(store)
    await orchestrator_factory()
    assert reads and reads[0] == newest  # it did not read the job's event from the log

    async def queued() -> bool:
        return await job_payload(store, project, "job-lost-1") is not None

    await eventually(queued, what="the lost job to be queued after the restart")


async def test_a_running_workflows_run_deadline_survives_a_restart(
    orchestrator_factory: Callable[..., Any], store: EventStore, settings: Settings,
    project: ProjectKey,
) -> None:
    """The read model restored a running workflow's wait from its ``workflow.created``
    (an adversarial pass): the run deadline became the start deadline. A run of an hour
    was failed "waiting for start_task" once that passed; a run of 0.3 s ran on until
    it. Started, approved and rejected open the run's wait too."""
    first: Orchestrator = await orchestrator_factory(start=False)
    await first.create_workflow(project, workflow_id="wf-hour", start_timeout=0.2,
                                run_timeout=3600)
    await first.start_workflow(project, "wf-hour")
    await first.create_workflow(project, workflow_id="wf-brief", start_timeout=3600,
                                run_timeout=0.3)
    await first.start_workflow(project, "wf-brief")
    await _project(store, settings)

    second: Orchestrator = await orchestrator_factory()
    waits = {w.workflow_id: w for w in second._timers.open.values()}
    assert waits["wf-hour"].awaited == waits["wf-brief"].awaited == "completion"
    assert waits["wf-hour"].timeout == 3600 and waits["wf-brief"].timeout == 0.3

    async def brief_failed() -> bool:
        return "workflow.failed" in await _types_of(store, "wf-brief")

    await eventually(brief_failed, timeout=10, what="wf-brief to time out at its run deadline")
    assert "workflow.timed_out" not in await _types_of(store, "wf-hour")
    view = await second.complete(project, "wf-hour", result={})
    assert view.state == "completed"
