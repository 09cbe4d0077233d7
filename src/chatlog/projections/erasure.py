"""The read models' side of an erasure: a tombstone deletes its scope's rows.

When the projector applies an ``erasure.recorded`` event it deletes the
erased project's (or thread's) rows from the conversation and workflow tables;
after a thread's, the project's row is derived again from the threads left
(:func:`refresh_project`), so it reads as if the erased events had never been
appended.
The writer connection has ``secure_delete`` on, so the deleted text is
overwritten in the file; the erasure service then checkpoints the WAL with
``TRUNCATE``. A rebuild reads a log that no longer holds the erased events and
converges to the same tables.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from chatlog.events import ErasureRecorded, RecordedEvent
from chatlog.eventstore.codec import parse_position
from chatlog.projections import _db

ERASURE_TYPE = ErasureRecorded.event_type

#: Tables keyed by ``project`` that hold a project's rows, and the column naming
#: the thread (None: the table has no per-thread rows).
_PROJECT_TABLES = (("messages", "thread_id"), ("threads", "thread_id"), ("projects", None),
                   ("workflow_history", None), ("workflows", None))


def erase_rows(conn: sqlite3.Connection, project: str, thread_id: str | None) -> int:
    """Delete ``project``'s rows (only ``thread_id``'s when given); return how many.

    Runs inside the caller's transaction; idempotent.
    """
    removed = 0
    if thread_id is not None:
        if not _db.table_exists(conn, "threads"):
            return 0
        row = conn.execute("SELECT 1 FROM threads WHERE project = ? AND thread_id = ?",
                           (project, thread_id)).fetchone()
        removed += conn.execute("DELETE FROM messages WHERE project = ? AND thread_id = ?",
                                (project, thread_id)).rowcount
        removed += conn.execute("DELETE FROM threads WHERE project = ? AND thread_id = ?",
                                (project, thread_id)).rowcount
        if row is not None:
            refresh_project(conn, project)
        return removed
    for table, _ in _PROJECT_TABLES:
        if _db.table_exists(conn, table):
            removed += conn.execute(f"DELETE FROM {table} WHERE project = ?",
                                    (project,)).rowcount
    return removed


#: The aggregate types with rows in the read models (an erasure of ``aggregates``
#: under one of them deletes rows too).
ROW_AGGREGATES = frozenset({"thread", "workflow"})


def erase_aggregate_rows(conn: sqlite3.Connection, project: str, aggregates: str) -> int:
    """Delete the rows of ``project``'s aggregates whose key after ``<project>/`` starts
    with ``aggregates`` (a tombstone of scope ``aggregates``); return how many.

    Threads (``thread/<prefix>``) and workflows (``workflow/<prefix>``) have rows here;
    an integration's own aggregates (``langgraph/...``) have none.
    """
    kind, _, prefix = aggregates.partition("/")
    removed = 0
    if kind not in ROW_AGGREGATES:
        return 0
    if kind == "thread" and _db.table_exists(conn, "threads"):
        for (thread_id,) in conn.execute(
                "SELECT thread_id FROM threads WHERE project = ? AND substr(thread_id, 1, ?) = ?",
                (project, len(prefix), prefix)).fetchall():
            removed += erase_rows(conn, project, thread_id)
    elif kind == "workflow" and _db.table_exists(conn, "workflows"):
        for table, column in (("workflow_history", "workflow_id"), ("workflows", "id")):
            removed += conn.execute(
                f"DELETE FROM {table} WHERE project = ? AND substr({column}, 1, ?) = ?",
                (project, len(prefix), prefix)).rowcount
    return removed


def refresh_project(conn: sqlite3.Connection, project: str) -> None:
    """Derive ``project``'s row from the threads left, as a rebuild of a log without
    the erased events does: thread and message counts; its creation time is its first
    remaining message's (in log order), its last activity the latest thread's; no
    threads left, no row (projects rows come from messages only)."""
    threads, messages, updated = conn.execute(
        "SELECT count(*), total(message_count), max(updated_ms) FROM threads"
        " WHERE project = ?", (project,)).fetchone()
    if not threads:
        conn.execute("DELETE FROM projects WHERE project = ?", (project,))
        return
    # Each thread's first message (the index messages_by_thread); the earliest by
    # position is the project's first (a project lives in one partition).
    firsts = conn.execute(
        "SELECT m.position, m.created_ms FROM threads t JOIN messages m"
        " ON m.project = t.project AND m.thread_id = t.thread_id AND m.version ="
        " (SELECT min(version) FROM messages WHERE project = t.project"
        "  AND thread_id = t.thread_id) WHERE t.project = ?", (project,)).fetchall()
    created = min(firsts, key=lambda r: parse_position(r[0]))[1] if firsts else None
    conn.execute(
        "UPDATE projects SET thread_count = ?, message_count = ?, updated_ms = ?,"
        " created_ms = coalesce(?, created_ms) WHERE project = ?",
        (threads, int(messages), updated, created, project))


def count_rows(path: Path, project: str, thread_id: str | None) -> int:
    """How many rows of the scope the read model at ``path`` holds (read only)."""
    conn = _db.connect_reader(path)
    try:
        if thread_id is not None:
            if not _db.table_exists(conn, "threads"):
                return 0
            where, args = "project = ? AND thread_id = ?", (project, thread_id)
            return sum(conn.execute(f"SELECT count(*) FROM {t} WHERE {where}", args).fetchone()[0]
                       for t in ("messages", "threads"))
        return sum(conn.execute(f"SELECT count(*) FROM {t} WHERE project = ?",
                                (project,)).fetchone()[0]
                   for t, _ in _PROJECT_TABLES if _db.table_exists(conn, t))
    finally:
        conn.close()


def applied_position(path: Path, partition: int) -> str:
    """The last position of ``partition`` the read model at ``path`` has applied (its
    projector may run in another process); ``0-0`` when none or no file."""
    if not path.exists():
        return "0-0"
    conn = _db.connect_reader(path)
    try:
        if not _db.table_exists(conn, "projector_checkpoints"):
            return "0-0"
        row = conn.execute("SELECT position FROM projector_checkpoints WHERE partition = ?",
                           (partition,)).fetchone()
        return str(row[0]) if row else "0-0"
    finally:
        conn.close()


class ErasureProjection:
    """Deletes the rows of an erased project or thread when its tombstone is applied."""

    name = "erasure"
    #: The event types this projection reads; the projector skips others for it.
    event_types = frozenset({ERASURE_TYPE})

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Nothing of its own: it deletes from the other projections' tables."""

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        """Nothing of its own."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        for ev in events:
            if ev.type != ERASURE_TYPE or not isinstance(ev.data, dict):
                continue
            scope = ev.data.get("scope")
            aggregates = ev.data.get("aggregates")
            if scope == "aggregates" and isinstance(aggregates, str):
                erase_aggregate_rows(conn, str(ev.project), aggregates)
                continue
            if scope not in ("project", "thread"):
                continue
            thread = ev.data.get("thread_id") if scope == "thread" else None
            erase_rows(conn, str(ev.project), thread if isinstance(thread, str) else None)


def purge_rows(conn: sqlite3.Connection, project: str, thread_id: str | None,
               aggregates: str | None, before: str) -> int:
    """Delete the scope's rows of events before the tombstone at ``before`` (what its
    projector has not deleted already), never a row of a later event: messages and
    workflow history by position, workflows by their last event's, threads left with
    no message; the project's row derived again. Return how many."""
    cut = parse_position(before)
    conn.create_function("chatlog_before", 1, lambda pos: parse_position(pos) < cut,
                         deterministic=True)
    kind, _, prefix = (aggregates or "").partition("/")
    if aggregates is not None and kind not in ROW_AGGREGATES:
        return 0
    args: tuple[str | int, ...] = (project,)
    threads = workflows = "project = ?"
    if thread_id is not None:
        threads, args = "project = ? AND thread_id = ?", (project, thread_id)
    elif aggregates is not None:
        threads, args = "project = ? AND substr(thread_id, 1, ?) = ?", (project, len(prefix),
                                                                         prefix)
        workflows = "project = ? AND substr({id}, 1, ?) = ?"
    removed = 0
    if kind in ("", "thread") and _db.table_exists(conn, "threads"):
        removed += conn.execute(f"DELETE FROM messages WHERE {threads}"
                                " AND chatlog_before(position)", args).rowcount
        removed += conn.execute(
            f"DELETE FROM threads WHERE {threads} AND NOT EXISTS (SELECT 1 FROM messages m"
            " WHERE m.project = threads.project AND m.thread_id = threads.thread_id)",
            args).rowcount
        refresh_project(conn, project)
    if thread_id is None and kind in ("", "workflow") and _db.table_exists(conn, "workflows"):
        for table, column in (("workflow_history", "workflow_id"), ("workflows", "id")):
            removed += conn.execute(
                f"DELETE FROM {table} WHERE {workflows.format(id=column)}"
                " AND chatlog_before(position)", args).rowcount
    return removed


def purge_read_model(path: Path, project: str, thread_id: str | None,
                     aggregates: str | None = None, *, before: str) -> int:
    """Delete the scope's rows (the ``aggregates`` under a prefix, when given) of events
    before the tombstone at ``before`` from the read model at ``path`` with
    ``secure_delete`` on (:func:`purge_rows`), then checkpoint its WAL with TRUNCATE, so
    neither the file's free pages nor a WAL frame keeps the text; return the rows
    deleted."""
    conn = _db.connect_writer(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = purge_rows(conn, project, thread_id, aggregates, before)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        deadline = time.monotonic() + 60
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return removed
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"{path}: readers kept the WAL from truncating")
            time.sleep(0.05)
    finally:
        conn.close()


def cut_after_erasures(events: list[RecordedEvent]) -> list[list[RecordedEvent]]:
    """``events`` in parts that end with each erasure tombstone: every projection
    applies one part before the next, so a tombstone deletes the rows of the events
    before it, not of those after it in the same batch (a thread's history that
    starts again at version 1 after its erasure, say). One part when there is none."""
    if not any(e.type == ERASURE_TYPE for e in events):
        return [events]
    parts: list[list[RecordedEvent]] = [[]]
    for e in events:
        parts[-1].append(e)
        if e.type == ERASURE_TYPE:
            parts.append([])
    return [part for part in parts if part]
