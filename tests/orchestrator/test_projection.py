"""The workflow read model: equals the orchestrator's fold, lists workflows, finds open waits."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.events import RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator
from chatlog.orchestrator.machine import EVENT_OF, Command, State, decide, fold
from chatlog.projections.models import WorkflowSummary
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.projections.workflows import WorkflowsProjection, list_workflows

PROJECT = uuid.UUID(int=7)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _data(type_: str, n: int) -> dict[str, object]:
    deadline = (T0 + timedelta(seconds=100 + n)).isoformat()
    return {
        "workflow.created": {"name": "w", "start_timeout": 1.0, "deadline": deadline},
        "workflow.approval_requested": {"approval_timeout": 1.0, "deadline": deadline},
        "workflow.failed": {"reason": f"failed {n}"},
        "workflow.timed_out": {"reason": f"timed out {n}", "awaited": "x", "waited": 1.0},
        "workflow.cancelled": {"reason": ""},
        "job.enqueued": {"job_id": "j", "kind": "k", "max_deliveries": 1},
    }.get(type_, {})


def _log(commands: list[Command], wid: str) -> list[RecordedEvent]:
    state, types = State.CREATED, []
    for c in [Command.CREATE, *commands]:
        try:
            state = decide(wid, state, c)
        except Exception:
            continue
        if c is Command.TIME_OUT:
            types += ["workflow.timed_out", "workflow.failed"]
            state = State.FAILED
        else:
            types.append(EVENT_OF[c])
    return [
        RecordedEvent(id=uuid.uuid4(), type=t, project=PROJECT, project_name="P",
                      aggregate_type="workflow", aggregate_id=wid, version=i + 1, partition=0,
                      position=f"{1_700_000_000_000 + i}-0", time=T0, data=_data(t, i))
        for i, t in enumerate(types)
    ]


def _ms(time: datetime | None) -> int | None:
    return None if time is None else round(time.timestamp() * 1000)


def _history_types(conn: sqlite3.Connection, project: object, wid: str) -> list[str]:
    return [t for (t,) in conn.execute(
        "SELECT type FROM workflow_history WHERE project = ? AND workflow_id = ? ORDER BY version",
        (str(project), wid))]


def _open_waits(conn: sqlite3.Connection) -> list[str]:
    """Waiting workflows, earliest deadline first."""
    return [w for (w,) in conn.execute(
        "SELECT id FROM workflows WHERE deadline_ms IS NOT NULL ORDER BY deadline_ms")]


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    proj = WorkflowsProjection()
    proj.create_schema(conn)
    proj.create_indexes(conn)
    return conn


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list(Command)), max_size=12), min_size=1, max_size=4),
       st.integers(min_value=1, max_value=5))
def test_the_read_model_equals_the_fold_of_the_events(
    scripts: list[list[Command]], batch: int
) -> None:
    logs = {f"wf-{i}": _log(cmds, f"wf-{i}") for i, cmds in enumerate(scripts)}
    merged = sorted((e for es in logs.values() for e in es), key=lambda e: (e.version, e.aggregate_id))
    conn = _conn()
    proj = WorkflowsProjection()
    for i in range(0, len(merged), batch):
        proj.apply(conn, merged[i:i + batch])
    rows = {r.workflow_id: r for r, _ in list_workflows(conn, PROJECT, limit=1000)}
    assert set(rows) == set(logs)
    for wid, events in logs.items():
        folded = fold(wid, events)
        row = rows[wid]
        assert row.state == folded.state.value
        assert row.awaiting == folded.awaiting
        expected_deadline = (int(folded.deadline.timestamp() * 1000)
                             if folded.deadline else None)
        assert _ms(row.deadline) == expected_deadline
        assert row.jobs == folded.jobs
        assert row.version == folded.version and row.position == folded.position
        assert (row.reason or None) == (folded.reason or None)
        assert _history_types(conn, PROJECT, wid) == [e.type for e in events]
    waiting = set(_open_waits(conn))
    assert waiting == {w for w, es in logs.items() if fold(w, es).awaiting}


async def test_the_projector_builds_the_workflow_model_from_the_log(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, tmp_path: Path,
) -> None:
    a = (await orchestrator.create_workflow(project, name="a", start_timeout=60)).workflow_id
    b = (await orchestrator.create_workflow(project, name="b", start_timeout=30)).workflow_id
    await orchestrator.start_workflow(project, b)
    await orchestrator.request_approval(project, b, timeout=30)
    await orchestrator.enqueue_job(project, b, kind="draft")
    c = (await orchestrator.create_workflow(project, name="c", start_timeout=60)).workflow_id
    await orchestrator.cancel(project, c, reason="dropped")
    projector = Projector(store, tmp_path / "rm.sqlite")
    try:
        await projector.catch_up()
    finally:
        await projector.stop()
    read_model = ReadModel(tmp_path / "rm.sqlite")
    conn = sqlite3.connect(tmp_path / "rm.sqlite")
    try:
        rows = read_model.list_workflows(project).workflows
        assert [r.workflow_id for r in rows] == [c, b, a]  # most recently changed first
        by_id = {r.workflow_id: r for r in rows}
        assert by_id[b].state == "awaiting_approval" and by_id[b].jobs == 1
        assert by_id[c].state == "cancelled" and by_id[c].reason == "dropped"
        assert by_id[a].project_name == project.display and by_id[a].name == "a"
        assert _open_waits(conn) == [b, a]  # earliest deadline first
        cancelled = read_model.list_workflows(project, state="cancelled").workflows
        assert [r.workflow_id for r in cancelled] == [c]
        page = read_model.list_workflows(project, limit=1)
        rest = read_model.list_workflows(project, cursor=page.next_cursor)
        assert [r.workflow_id for r in page.workflows + rest.workflows] == [c, b, a]
        # The view of one workflow and the list's row of it are one shape, one content
        # (the read model keeps the deadline to the millisecond).
        view = await orchestrator.get_workflow(project, b)
        summary = WorkflowSummary(**view.model_dump(include=set(WorkflowSummary.model_fields)))
        assert summary.model_copy(update={"deadline": None}) \
            == by_id[b].model_copy(update={"deadline": None})
        assert summary.deadline is not None and by_id[b].deadline is not None
        assert int(summary.deadline.timestamp() * 1000) == _ms(by_id[b].deadline)
        assert _history_types(conn, project.key, b) == [
            "workflow.created", "workflow.started", "workflow.approval_requested",
            "job.enqueued"]
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM workflows WHERE deadline_ms IS NOT NULL "
            "ORDER BY deadline_ms").fetchall())
        assert "workflows_open_waits" in plan
    finally:
        conn.close()
        read_model.close()
