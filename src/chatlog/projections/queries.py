"""The read API over the conversation read model.

Every query is one ``SELECT`` served by an index (``tests/projections/
test_query_plans.py`` checks each plan). Each runs in its own read
snapshot of a WAL database, so a reader sees a batch (or a rebuild's switch)
entirely or not at all. Connections are read-only and per thread: a
:class:`ReadModel` can be shared by threads (an executor) and by an event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson

from chatlog.errors import InvalidInput
from chatlog.events import time_of
from chatlog.eventstore.codec import Cursor
from chatlog.identity import ProjectKey
from chatlog.pages import decode_cursor, encode_cursor
from chatlog.projections import _db, workflows
from chatlog.projections.models import (
    Message,
    MessagePage,
    ProjectSummary,
    ThreadPage,
    ThreadSummary,
    WorkflowsPage,
)
from chatlog.projections.registry import default_projections

MAX_LIMIT = 1000

_PROJECT_COLS = "project, name, thread_count, message_count, created_ms, updated_ms"
_THREAD_COLS = ("project, thread_id, message_count, last_version, created_ms, updated_ms,"
                " updated_seq, last_message_id, last_role, last_preview")
_MESSAGE_COLS = ("message_id, project, thread_id, version, role, content, metadata, created_ms,"
                 " position")

#: Every SQL statement the read API runs (the query-plan test EXPLAINs each).
QUERIES: dict[str, str] = {
    "list_projects": f"SELECT {_PROJECT_COLS} FROM projects ORDER BY name, project",
    "get_project": f"SELECT {_PROJECT_COLS} FROM projects WHERE project = ?",
    "list_threads": (f"SELECT {_THREAD_COLS} FROM threads WHERE project = ?"
                     " ORDER BY updated_ms DESC, updated_seq DESC LIMIT ?"),
    "list_threads_after": (f"SELECT {_THREAD_COLS} FROM threads WHERE project = ?"
                           " AND (updated_ms, updated_seq) < (?, ?)"
                           " ORDER BY updated_ms DESC, updated_seq DESC LIMIT ?"),
    "get_thread": f"SELECT {_THREAD_COLS} FROM threads WHERE project = ? AND thread_id = ?",
    "thread_exists": "SELECT 1 FROM threads WHERE project = ? AND thread_id = ?",
    "list_messages": (f"SELECT {_MESSAGE_COLS} FROM messages WHERE project = ?"
                      " AND thread_id = ? AND version > ? ORDER BY version LIMIT ?"),
    "checkpoint": "SELECT partition, position, events FROM projector_checkpoints",
}


def _key(project: uuid.UUID | ProjectKey | str) -> str:
    if isinstance(project, ProjectKey):
        return str(project.key)
    if isinstance(project, uuid.UUID):
        return str(project)
    try:
        return str(uuid.UUID(project))
    except ValueError:
        raise InvalidInput(
            f"project key {project!r} is not a UUID; normalise the name first "
            "(chatlog.identity.normalize_project_id)") from None


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def read_progress(path: Path, partitions: int) -> tuple[Cursor, list[int], dict[str, int]] | None:
    """The projector's progress stored in the read model file at ``path``, read-only.

    ``(checkpoint, events applied per partition, counters)``; None when there
    is no file or the projector has not created its tables yet.
    """
    if not Path(path).exists():
        return None
    conn = _db.connect_reader(Path(path))
    try:
        if not _db.table_exists(conn, "projector_checkpoints"):
            return None
        cursor, counts = _db.read_checkpoint(conn, partitions)
        return cursor, counts, _db.counters(conn)
    finally:
        conn.close()


class ReadModel:
    """Queries over the read model in ``path`` (projects, threads, messages, workflows).

    Project arguments are normalised project keys (a UUID, or a
    :class:`~chatlog.identity.ProjectKey`): normalise raw names with
    :func:`chatlog.identity.normalize_project_id` first.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self._ensure_file()
            conn = _db.connect_reader(self.path)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's read-only connection, for read queries kept beside their
        projection (``chatlog.projections.workflows``); one snapshot per statement."""
        return self._conn()

    def _ensure_file(self) -> None:
        """Create an empty model when there is none yet, so queries answer "nothing"."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                writer = _db.connect_writer(self.path)
                try:
                    _db.create_all(writer, default_projections())
                finally:
                    writer.close()
                self._ready = True

    def close(self) -> None:
        """Close every connection this read model opened (in any thread)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _all(self, name: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._conn().execute(QUERIES[name], args).fetchall()

    # -- projects -------------------------------------------------------------

    def list_projects(self) -> list[ProjectSummary]:
        """Every project with messages, by name."""
        return [self._project(row) for row in self._all("list_projects")]

    def get_project(self, project: uuid.UUID | ProjectKey | str) -> ProjectSummary | None:
        rows = self._all("get_project", (_key(project),))
        return self._project(rows[0]) if rows else None

    @staticmethod
    def _project(row: tuple[Any, ...]) -> ProjectSummary:
        return ProjectSummary(project=uuid.UUID(row[0]), name=row[1], thread_count=row[2],
                              message_count=row[3], created_at=time_of(row[4]),
                              updated_at=time_of(row[5]))

    # -- threads ----------------------------------------------------------------

    def list_threads(self, project: uuid.UUID | ProjectKey | str, limit: int = 50,
                     cursor: str | None = None) -> ThreadPage:
        """The project's conversation list, most recently active first.

        ``cursor`` is the ``next_cursor`` of the previous page (opaque).
        """
        key = _key(project)
        n = _limit(limit)
        if cursor:
            ms, seq = decode_cursor(cursor, (int, int))
            rows = self._all("list_threads_after", (key, ms, seq, n + 1))
        else:
            rows = self._all("list_threads", (key, n + 1))
        more = len(rows) > n
        rows = rows[:n]
        threads = [self._thread(row) for row in rows]
        next_cursor = encode_cursor((rows[-1][5], rows[-1][6])) if more else None
        return ThreadPage(threads=threads, next_cursor=next_cursor)

    def get_thread(self, project: uuid.UUID | ProjectKey | str,
                   thread_id: str) -> ThreadSummary | None:
        rows = self._all("get_thread", (_key(project), thread_id))
        return self._thread(rows[0]) if rows else None

    def thread_exists(self, project: uuid.UUID | ProjectKey | str, thread_id: str) -> bool:
        return bool(self._all("thread_exists", (_key(project), thread_id)))

    @staticmethod
    def _thread(row: tuple[Any, ...]) -> ThreadSummary:
        return ThreadSummary(project=uuid.UUID(row[0]), thread_id=row[1], message_count=row[2],
                             last_version=row[3], created_at=time_of(row[4]),
                             updated_at=time_of(row[5]), last_message_id=uuid.UUID(row[7]),
                             last_role=row[8], last_preview=row[9])

    # -- messages -----------------------------------------------------------------

    def list_messages(self, project: uuid.UUID | ProjectKey | str, thread_id: str,
                      after_version: int = 0, limit: int = 100) -> MessagePage:
        """A thread's messages after ``after_version``, in order (an empty page if unknown)."""
        if after_version < 0:
            raise InvalidInput(f"after_version must be 0 or more, not {after_version}")
        n = _limit(limit)
        rows = self._all("list_messages", (_key(project), thread_id, after_version, n + 1))
        more = len(rows) > n
        messages = [
            Message(message_id=uuid.UUID(r[0]), project=uuid.UUID(r[1]), thread_id=r[2],
                    version=r[3], role=r[4], content=r[5], metadata=orjson.loads(r[6]),
                    created_at=time_of(r[7]), position=r[8])
            for r in rows[:n]
        ]
        return MessagePage(messages=messages,
                           next_after_version=messages[-1].version if more else None)

    # -- workflows --------------------------------------------------------------------

    def list_workflows(self, project: uuid.UUID | ProjectKey | str, *, state: str | None = None,
                       limit: int = 50, cursor: str | None = None, name: str | None = None,
                       id_prefix: str | None = None) -> WorkflowsPage:
        """The project's workflows, most recently changed first (only ``state``, if given;
        only names containing ``name``, ids starting with ``id_prefix``), with the
        count per state of that search.

        ``cursor`` is the ``next_cursor`` of the previous page (opaque).
        """
        n = _limit(limit)
        before: workflows.PageKey | None = None
        if cursor:
            ms, seq, last = decode_cursor(cursor, (int, int, str))
            before = (ms, seq, last)
        conn, key = self._conn(), _key(project)
        rows = workflows.list_workflows(conn, key, state=state, limit=n + 1, before=before,
                                        name=name, id_prefix=id_prefix)
        counts = workflows.state_counts(conn, key, name=name, id_prefix=id_prefix)
        more = len(rows) > n
        rows = rows[:n]
        return WorkflowsPage(workflows=[summary for summary, _ in rows],
                             next_cursor=encode_cursor(rows[-1][1]) if more and rows else None,
                             counts=counts)

    # -- the projector's progress ---------------------------------------------------

    def checkpoint(self, partitions: int) -> tuple[Cursor, list[int]]:
        """The last applied position per partition, and events applied per partition."""
        return _db.read_checkpoint(self._conn(), partitions)
