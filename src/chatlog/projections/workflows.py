"""Workflow read model: state, deadline and history of each workflow.

One row per workflow in ``workflows`` (state, what it awaits and until when,
version, latest position) and one row per event in ``workflow_history``
(workflow transitions and job lifecycle). The state each event leads to and
what a state awaits come from :mod:`chatlog.events`, as the orchestrator's
fold takes them; a property test checks this read model against that fold.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from chatlog.events import (
    AWAITED,
    STATE_AFTER,
    JobEnqueued,
    RecordedEvent,
    WorkflowCreated,
    time_of,
    types_of,
)
from chatlog.projections import _db
from chatlog.projections.models import WorkflowSummary

#: An index sqlite-utils cannot declare (it has a WHERE clause): the timer's query.
_OPEN_WAITS_INDEX = """
CREATE INDEX IF NOT EXISTS workflows_open_waits ON workflows (deadline_ms)
    WHERE deadline_ms IS NOT NULL
"""

_INSERT = """
INSERT INTO workflows (project, id, project_name, name, state, awaiting, deadline_ms, reason,
                       version, position, created_ms, updated_ms, updated_seq, jobs)
VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, 0)
ON CONFLICT (project, id) DO NOTHING
"""

_TRANSITION = """
UPDATE workflows SET state = ?, awaiting = ?, deadline_ms = ?, reason = COALESCE(?, reason),
                     version = ?, position = ?, updated_ms = ?, updated_seq = ?
WHERE project = ? AND id = ? AND version < ?
"""

_TOUCH = """
UPDATE workflows SET version = ?, position = ?, updated_ms = ?, updated_seq = ?,
                     jobs = jobs + ?
WHERE project = ? AND id = ? AND version < ?
"""

_HISTORY = """
INSERT OR IGNORE INTO workflow_history (project, workflow_id, version, type, event_id, position,
                                        time_ms, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""


def _split(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def _deadline_ms(data: dict[str, Any]) -> int | None:
    raw = data.get("deadline")
    if not isinstance(raw, str):
        return None
    try:
        return int(datetime.fromisoformat(raw).timestamp() * 1000)
    except ValueError:
        return None


class WorkflowsProjection:
    """Workflows (state, deadline) and their history from ``workflow.*`` and ``job.*`` events."""

    name = "workflows"
    #: The event types this projection reads; the projector skips others for it.
    event_types = types_of("workflow")

    def create_schema(self, conn: sqlite3.Connection) -> None:
        db = _db.schema(conn)
        _db.create_table(db, "workflows", {
            "project": str, "id": str, "project_name": str, "name": str, "state": str,
            "awaiting": str, "deadline_ms": int, "reason": str, "version": int,
            "position": str, "created_ms": int, "updated_ms": int, "updated_seq": int,
            "jobs": int,
        }, pk=("project", "id"), nullable=frozenset({"awaiting", "deadline_ms", "reason"}),
            defaults={"jobs": 0})
        _db.create_table(db, "workflow_history", {
            "project": str, "workflow_id": str, "version": int, "type": str, "event_id": str,
            "position": str, "time_ms": int, "data": str,
        }, pk=("project", "workflow_id", "version"))

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        """One index per read query (``EXPLAIN QUERY PLAN`` is checked in the tests)."""
        workflows = _db.schema(conn)["workflows"]
        workflows.create_index(  # type: ignore[union-attr]
            ["project", _db.desc("updated_ms"), _db.desc("updated_seq")],
            index_name="workflows_by_recency", if_not_exists=True)
        workflows.create_index(  # type: ignore[union-attr]
            ["project", "state", _db.desc("updated_ms"), _db.desc("updated_seq")],
            index_name="workflows_by_state", if_not_exists=True)
        conn.execute(_OPEN_WAITS_INDEX)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply ``events`` in log order (inside the caller's transaction)."""
        for ev in events:
            if ev.aggregate_type != "workflow" or ev.type not in self.event_types:
                continue
            project = str(ev.project)
            wid = ev.aggregate_id
            data = ev.data if isinstance(ev.data, dict) else {}
            ms, seq = _split(ev.position)
            conn.execute(_HISTORY, (project, wid, ev.version, ev.type, str(ev.id), ev.position,
                                    ms, orjson.dumps(data).decode()))
            target = STATE_AFTER.get(ev.type)
            if target is None:
                jobs = int(ev.type == JobEnqueued.event_type)
                conn.execute(_TOUCH, (ev.version, ev.position, ms, seq, jobs, project, wid,
                                      ev.version))
                continue
            awaiting = AWAITED.get(target)
            deadline = _deadline_ms(data) if awaiting else None
            if deadline is None:
                awaiting = None  # a running state without a run timeout waits for nothing
            if ev.type == WorkflowCreated.event_type:
                conn.execute(_INSERT, (project, wid, ev.project_name, str(data.get("name", "")),
                                       target.value, awaiting, deadline, ev.version,
                                       ev.position, ms, ms, seq))
                continue
            reason = data.get("reason") if isinstance(data.get("reason"), str) else None
            conn.execute(_TRANSITION, (target.value, awaiting, deadline, reason or None,
                                       ev.version, ev.position, ms, seq, project, wid,
                                       ev.version))


# -- queries -----------------------------------------------------------------------

#: Whether the workflow timed out: its history holds a ``workflow.timed_out`` event.
_TIMED_OUT = ("EXISTS (SELECT 1 FROM workflow_history h WHERE h.project = workflows.project"
              " AND h.workflow_id = workflows.id AND h.type = 'workflow.timed_out')")
_COLUMNS = ("id, project, project_name, name, state, awaiting, deadline_ms, reason, version, "
            f"position, created_ms, updated_ms, jobs, updated_seq, {_TIMED_OUT}")
#: The pseudo-state a list filters on to find workflows that timed out (they end ``failed``).
TIMED_OUT = "timed_out"

#: A page key: the last row's ``(updated_ms, updated_seq, id)``.
PageKey = tuple[int, int, str]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search(where: list[str], args: list[Any], name: str | None, id_prefix: str | None) -> None:
    if name:
        where.append("name LIKE ? ESCAPE '\\'")  # case-insensitive for ASCII
        args.append(f"%{_like(name)}%")
    if id_prefix:
        # A range, not LIKE: ids are case-sensitive and the primary key serves it.
        where.append("id >= ? AND id < ?")
        args.extend((id_prefix, id_prefix + "\U0010ffff"))


def list_workflows(
    conn: sqlite3.Connection,
    project: uuid.UUID | str,
    *,
    state: str | None = None,
    limit: int = 50,
    before: PageKey | None = None,
    name: str | None = None,
    id_prefix: str | None = None,
) -> list[tuple[WorkflowSummary, PageKey]]:
    """A project's workflows, most recently changed first (optionally in one ``state``,
    with ``name`` in their name, or an id starting with ``id_prefix``), each with its
    page key: pass the last one as ``before`` for the next page.

    ``state="timed_out"`` lists the workflows that timed out (they rest in ``failed``).
    """
    where = ["project = ?"]
    args: list[Any] = [str(project)]
    _search(where, args, name, id_prefix)
    if state == TIMED_OUT:
        where.append(f"state = 'failed' AND {_TIMED_OUT}")
    elif state is not None:
        where.append("state = ?")
        args.append(state)
    if before is not None:
        where.append("(updated_ms, updated_seq, ?) < (?, ?, id)")
        args.extend((before[2], before[0], before[1]))
    args.append(max(1, min(limit, 1000)))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM workflows WHERE {' AND '.join(where)} "
        "ORDER BY updated_ms DESC, updated_seq DESC, id LIMIT ?",
        args,
    ).fetchall()
    return [(_summary(r), (r[11], r[13], r[0])) for r in rows]


def state_counts(
    conn: sqlite3.Connection, project: uuid.UUID | str, *, name: str | None = None,
    id_prefix: str | None = None,
) -> dict[str, int]:
    """How many of a project's workflows are in each state (with the same search)."""
    where = ["project = ?"]
    args: list[Any] = [str(project)]
    _search(where, args, name, id_prefix)
    rows = conn.execute(
        f"SELECT state, COUNT(*) FROM workflows WHERE {' AND '.join(where)} GROUP BY state",
        args,
    ).fetchall()
    return {state: count for state, count in rows}


def project_activity(conn: sqlite3.Connection) -> dict[str, tuple[str, int, int, int]]:
    """Per project key: ``(name, workflow count, first created ms, last change ms)``."""
    rows = conn.execute(
        "SELECT project, MIN(project_name), COUNT(*), MIN(created_ms), MAX(updated_ms) "
        "FROM workflows GROUP BY project"
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def _summary(r: tuple[Any, ...]) -> WorkflowSummary:
    return WorkflowSummary(
        workflow_id=r[0], project=uuid.UUID(r[1]), project_name=r[2], name=r[3], state=r[4],
        awaiting=r[5], deadline=time_of(r[6]) if r[6] is not None else None, reason=r[7],
        version=r[8], position=r[9], created_at=time_of(r[10]), updated_at=time_of(r[11]),
        jobs=r[12], timed_out=bool(r[14]),
    )


# -- the orchestrator's restore point ------------------------------------------------

#: The events that open a wait with a deadline: created and approval requested, and
#: started, approved and rejected when the workflow has a run timeout. The latest of
#: them in a workflow with a deadline opened its wait.
OPENING_TYPES = tuple(sorted(t for t, state in STATE_AFTER.items() if state in AWAITED))
_OPEN_WAITS_WITH_OPENING = """
SELECT w.project, w.id, w.project_name, w.version, h.type, h.data, h.time_ms
FROM workflows AS w
JOIN workflow_history AS h
  ON h.project = w.project AND h.workflow_id = w.id AND h.version = (
     SELECT MAX(version) FROM workflow_history
     WHERE project = w.project AND workflow_id = w.id
       AND type IN ({opening}))
WHERE w.deadline_ms IS NOT NULL
""".format(opening=", ".join(f"'{t}'" for t in OPENING_TYPES))


@dataclass(frozen=True, slots=True)
class OpenWaitRow:
    """A workflow that waited at the checkpoint, with the event that opened its wait."""

    project: str
    workflow_id: str
    project_name: str
    #: The workflow's latest version at the checkpoint (job events included).
    version: int
    #: One of ``OPENING_TYPES``.
    opened_by: str
    #: That event's data (``deadline``; ``start_timeout``, ``approval_timeout`` or
    #: ``run_timeout``).
    data: dict[str, Any]
    #: That event's time (ms since the epoch).
    time_ms: int


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """What the workflows read model knew at its checkpoint, read in one transaction."""

    #: The checkpoint: the last position applied, per partition.
    positions: list[str]
    open_waits: list[OpenWaitRow]


def restore_point(path: Path, partitions: int) -> RestorePoint | None:
    """The open waits of the read model at ``path`` and the checkpoint they hold at.

    None when there is no usable read model (no file, no workflow tables yet, or
    nothing applied): the caller then reads the log from its start.
    """
    if not path.exists():
        return None
    conn = _db.connect_reader(path)
    try:
        conn.execute("BEGIN")  # one snapshot: the rows are those of the checkpoint
        try:
            if not all(_db.table_exists(conn, t) for t in (
                    "projector_checkpoints", "workflows", "workflow_history")):
                return None
            cursor, _ = _db.read_checkpoint(conn, partitions)
            if all(p == "0-0" for p in cursor.positions):
                return None
            waits = [
                OpenWaitRow(project, wid, name, version, kind, orjson.loads(data), time_ms)
                for project, wid, name, version, kind, data, time_ms
                in conn.execute(_OPEN_WAITS_WITH_OPENING)
            ]
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()
    return RestorePoint(cursor.positions, waits)


def recent_jobs(path: Path, since_ms: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(project, project_name, workflow_id, job data)`` of the ``job.enqueued`` events
    since ``since_ms``, oldest first (the orchestrator re-checks them after a restore)."""
    if not path.exists():
        return []
    conn = _db.connect_reader(path)
    try:
        if not _db.table_exists(conn, "workflow_history"):
            return []
        rows = conn.execute(
            "SELECT h.project, w.project_name, h.workflow_id, h.data FROM workflows AS w "
            "JOIN workflow_history AS h ON h.project = w.project AND h.workflow_id = w.id "
            "WHERE w.jobs > 0 AND w.updated_ms >= ? AND h.type = 'job.enqueued' "
            "AND h.time_ms >= ? ORDER BY h.time_ms",
            (since_ms, since_ms),
        ).fetchall()
    finally:
        conn.close()
    return [(p, name, wid, orjson.loads(data)) for p, name, wid, data in rows]
