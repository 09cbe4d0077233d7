"""Conversation read models: projects, threads (the conversation list), messages.

Everything is keyed by the normalised project key (its UUID as text), so
``Blog-Project`` and ``blog-project`` share one conversation list. A project
keeps the first raw name it was given, for display.

Two ways in, one result:

- :meth:`ConversationsProjection.apply` (the live path): a batch of decoded
  events, folded per thread in memory, then a few upserts per batch.
- :class:`ConversationFold` (the rebuild path): undecoded stream entries,
  message rows appended with ``executemany`` and the per-thread and
  per-project aggregates kept in memory until the end.

Both fold the same way (see :class:`_Fold`), so a rebuild equals an
incremental build row for row (property-tested).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson

from chatlog.events import MessageAppended, RecordedEvent
from chatlog.eventstore.codec import flat_fields
from chatlog.projections import _db, _message_body

MESSAGE_TYPE = MessageAppended.event_type
_MESSAGE_TYPE_BYTES = MESSAGE_TYPE.encode()
#: Characters of the last message shown in the conversation list.
PREVIEW_CHARS = 200

_INSERT_MESSAGE = (
    "INSERT INTO messages (project, thread_id, version, message_id, role, content, metadata,"
    " created_ms, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Message rows per INSERT of a bulk load: one statement stepped per 500 rows, not per
#: row (~10% of the insert's cost, measured), and the GIL released while SQLite inserts
#: them (the rebuild folds the next chunk meanwhile).
_BULK_GROUP = 500
_INSERT_MESSAGES = _INSERT_MESSAGE.replace(
    "(?, ?, ?, ?, ?, ?, ?, ?, ?)", ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * _BULK_GROUP))

_UPSERT_THREAD = """
INSERT INTO threads (project, thread_id, message_count, last_version, created_ms, updated_ms,
                     updated_seq, last_message_id, last_role, last_preview)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (project, thread_id) DO UPDATE SET
    message_count = message_count + excluded.message_count,
    last_version = excluded.last_version,
    updated_ms = excluded.updated_ms,
    updated_seq = excluded.updated_seq,
    last_message_id = excluded.last_message_id,
    last_role = excluded.last_role,
    last_preview = excluded.last_preview
"""

_UPSERT_PROJECT = """
INSERT INTO projects (project, name, thread_count, message_count, created_ms, updated_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (project) DO UPDATE SET
    thread_count = thread_count + excluded.thread_count,
    message_count = message_count + excluded.message_count,
    updated_ms = excluded.updated_ms
"""

_ADD_COUNTER = """
INSERT INTO conversation_counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
"""


# Message row columns (see _INSERT_MESSAGE).
_VERSION, _MESSAGE_ID, _ROLE, _CONTENT, _CREATED_MS, _POSITION = 2, 3, 4, 5, 7, 8


def _ms(text: Any) -> int | None:
    """Milliseconds since the epoch of a message's own ``created_at`` (ISO 8601, UTC if
    naive); None when it does not parse (the append time is used instead)."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _thread_row(project: str, thread_id: str, state: list[Any]) -> tuple[Any, ...]:
    """A threads row (``_UPSERT_THREAD``) from a thread's fold state."""
    added, first, last = state[0], state[1], state[2]
    seq = int(last[_POSITION].partition("-")[2])
    return (project, thread_id, added, last[_VERSION], first[_CREATED_MS], last[_CREATED_MS],
            seq, last[_MESSAGE_ID], last[_ROLE], last[_CONTENT][:PREVIEW_CHARS])


class _Fold:
    """Folds messages into message rows and per-thread changes, in log order.

    Per thread it keeps ``[messages added, first row, last row, new?, project
    name]``: references to rows rather than copies of their fields, and no
    per-project work per message, keep a rebuild's cost per message low.
    Project rows are derived from the threads at the end (see
    :meth:`project_rows`). ``known_thread`` answers whether a thread already
    exists in the tables (so a project's thread count grows for new ones only).
    """

    def __init__(self) -> None:
        self.threads: dict[Any, list[Any]] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.invalid = 0

    def add(self, key: Any, project: str, project_name: str, thread_id: str, version: int,
            message_id: str, data: Any, position: str, known_thread: bool | None) -> None:
        """Fold one message of the thread ``key`` (any hashable naming it, one per thread)."""
        if not isinstance(data, dict):
            self.invalid += 1
            return
        role = data.get("role")
        content = data.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            self.invalid += 1
            return
        metadata = data.get("metadata")
        written = data.get("created_at")
        row = (project, thread_id, version, message_id, role, content,
               orjson.dumps(metadata).decode() if metadata else "{}",
               (written and _ms(written)) or int(position.partition("-")[0]), position)
        self.rows.append(row)
        thread = self.threads.get(key)
        if thread is None:
            self.threads[key] = [1, row, row, not known_thread, project_name]
        else:
            thread[0] += 1
            thread[2] = row

    def thread_rows(self, keys: Iterable[Any]) -> list[tuple[Any, ...]]:
        rows = []
        for key in keys:
            state = self.threads[key]
            first = state[1]
            rows.append(_thread_row(first[0], first[1], state))
        return rows

    def project_rows(self) -> list[tuple[Any, ...]]:
        """Project rows (``_UPSERT_PROJECT``), sorted by project key.

        Threads are in the order of their first message (dicts keep insertion
        order), so a project's first thread holds its first message: its name
        and creation time. A project lives in one partition, where positions
        (and their times) only grow, so its last time is the largest.
        """
        projects: dict[str, list[Any]] = {}
        for added, first, last, new, name in self.threads.values():
            project = first[0]
            acc = projects.get(project)
            if acc is None:
                projects[project] = [name, int(new), added, first[_CREATED_MS],
                                     last[_CREATED_MS]]
            else:
                acc[1] += new
                acc[2] += added
                acc[4] = max(acc[4], last[_CREATED_MS])
        return [(k, *projects[k]) for k in sorted(projects)]

    def write(self, conn: sqlite3.Connection) -> None:
        if self.rows:
            conn.executemany(_INSERT_MESSAGE, self.rows)
        if self.threads:
            conn.executemany(_UPSERT_THREAD, self.thread_rows(self.threads))
            conn.executemany(_UPSERT_PROJECT, self.project_rows())
        if self.invalid:
            conn.execute(_ADD_COUNTER, ("skipped_invalid", self.invalid))


class ConversationsProjection:
    """Projects, threads and messages from ``message.appended`` events."""

    name = "conversations"
    #: The event types this projection reads; the projector skips others for it.
    event_types = frozenset({MESSAGE_TYPE})

    def create_schema(self, conn: sqlite3.Connection) -> None:
        db = _db.schema(conn)
        _db.create_table(db, "projects", {
            "project": str, "name": str, "thread_count": int, "message_count": int,
            "created_ms": int, "updated_ms": int,
        }, pk="project")
        _db.create_table(db, "threads", {
            "project": str, "thread_id": str, "message_count": int, "last_version": int,
            "created_ms": int, "updated_ms": int, "updated_seq": int, "last_message_id": str,
            "last_role": str, "last_preview": str,
        }, pk=("project", "thread_id"))
        # No primary key: the rebuild appends rows in log order, indexes come after.
        _db.create_table(db, "messages", {
            "project": str, "thread_id": str, "version": int, "message_id": str, "role": str,
            "content": str, "metadata": str, "created_ms": int, "position": str,
        })
        _db.create_table(db, "conversation_counters", {"name": str, "value": int}, pk="name")

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        """One index per read query (``EXPLAIN QUERY PLAN`` is checked in the tests)."""
        db = _db.schema(conn)
        db["messages"].create_index(  # type: ignore[union-attr]
            ["project", "thread_id", "version"], index_name="messages_by_thread",
            unique=True, if_not_exists=True)
        db["threads"].create_index(  # type: ignore[union-attr]
            ["project", _db.desc("updated_ms"), _db.desc("updated_seq")],
            index_name="threads_by_recency", if_not_exists=True)
        db["projects"].create_index(  # type: ignore[union-attr]
            ["name", "project"], index_name="projects_by_name", if_not_exists=True)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` into the tables (inside the caller's transaction)."""
        fold = _Fold()
        for ev in events:
            if ev.type != MESSAGE_TYPE or ev.aggregate_type != "thread":
                continue
            project = str(ev.project)
            key = (project, ev.aggregate_id)
            known: bool | None = None
            if key not in fold.threads:
                # Version 1 is a thread's first event: no row can exist yet, so
                # only later versions need the look-up (a new thread per message
                # is the common case of a busy chat service).
                known = ev.version > 1 and conn.execute(
                    "SELECT 1 FROM threads WHERE project = ? AND thread_id = ?", key
                ).fetchone() is not None
            fold.add(key, project, ev.project_name, ev.aggregate_id, ev.version, str(ev.id),
                     ev.data, ev.position, known)
        fold.write(conn)

    # -- the rebuild path: fold undecoded entries, write rows, aggregates last ----

    def bulk_fold(self) -> ConversationFold:
        """A fold of raw stream entries; pure Python, may run in another process."""
        return ConversationFold()

    def bulk_write(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Append message rows (in log order, into a table without indexes yet)."""
        grouped = len(rows) - len(rows) % _BULK_GROUP
        if grouped:
            conn.executemany(_INSERT_MESSAGES, [
                tuple(chain.from_iterable(rows[i:i + _BULK_GROUP]))
                for i in range(0, grouped, _BULK_GROUP)])
        if grouped < len(rows):
            conn.executemany(_INSERT_MESSAGE, rows[grouped:])

    def bulk_finish(self, conn: sqlite3.Connection, final: Any) -> None:
        """Write the aggregates a :meth:`ConversationFold.final` returned."""
        threads, projects, invalid = final
        conn.executemany(_UPSERT_THREAD, threads)
        conn.executemany(_UPSERT_PROJECT, projects)
        if invalid:
            conn.execute(_ADD_COUNTER, ("skipped_invalid", invalid))


class ConversationFold:
    """Folds raw entries ``(position, [field, value, ...])`` as XRANGE returns them.

    Message rows come back per chunk (to be written in log order); one small
    record per thread stays in memory until :meth:`final`.
    """

    def __init__(self) -> None:
        self.fold = _Fold()

    def rows(self, entries: Iterable[tuple[bytes, list[bytes]]]) -> list[tuple[Any, ...]]:
        """Message rows of stream entries (the hot tail, read from Redis).

        :meth:`_Fold.add` inlined, as in :meth:`_fold_columns` (the same checks, rows
        and states): a call and a field tuple per entry cost a tenth of the fold. A
        thread is keyed by its stream field ``a`` (``<project>/thread/<id>``), bytes
        as they came: a thread seen before needs no decoding, and its rows share its
        first row's strings.
        """
        fold = self.fold
        threads = fold.threads
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        parse = _message_body.parse
        message = _MESSAGE_TYPE_BYTES
        invalid = 0
        for pos, flat in entries:
            if len(flat) == 10 and flat[2] == b"t" and flat[0] == b"i" and flat[4] == b"a" \
                    and flat[6] == b"v" and flat[8] == b"b":  # the order XADD wrote
                if flat[3] != message:
                    continue
                event_id, aggregate, version, body = flat[1], flat[5], flat[7], flat[9]
            else:
                d = flat_fields(flat)
                if d[b"t"] != message:
                    continue
                event_id, aggregate, version, body = d[b"i"], d[b"a"], d[b"v"], d[b"b"]
            state = threads.get(aggregate)
            if state is None:
                project, _, thread_id = aggregate.decode().partition("/thread/")
                if not thread_id:
                    continue
            else:
                project, thread_id = state[1][0], state[1][1]
            parsed = parse(body)
            if parsed is None:
                invalid += 1
                continue
            role, content, metadata, written, name = parsed
            position = pos.decode()
            row = (project, thread_id, int(version), event_id.decode(), role, content,
                   metadata,
                   (written and _ms(written)) or int(position.partition("-")[0]), position)
            append(row)
            if state is None:
                threads[aggregate] = [1, row, row, True, name]
            else:
                state[0] += 1
                state[2] = row
        fold.invalid += invalid
        fold.rows = rows
        return rows

    def rows_batch(self, batch: Any) -> list[tuple[Any, ...]]:
        """Message rows of an archive batch (a ``pyarrow.RecordBatch`` with the columns
        position, event_id, aggregate, version, type, time, body).

        Columnar: the messages are selected in Arrow and each column becomes one
        Python list; threads are looked up once per distinct aggregate of the batch
        (dictionary-encoded), not per row; the append time is the ``time`` column.
        Per message only its body is parsed. No dict or event object per row
        beyond the parsed body. Threads are keyed by their aggregate as bytes, like
        the hot tail's, so a thread that spans both tiers is one thread.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        types = batch.column("type")
        # Filtering copies every column (the bodies): only when something else is there.
        messages = batch if pc.unique(types).to_pylist() == [MESSAGE_TYPE] else batch.filter(
            pc.equal(types, MESSAGE_TYPE))
        if not messages.num_rows:
            return []
        encoded = pc.dictionary_encode(messages.column("aggregate"))
        threads = self.fold.threads
        keys = encoded.dictionary.cast(pa.binary()).to_pylist()
        # Per distinct aggregate: its thread's state (None until its first message)
        # and its (key, project, thread id) (None: not a thread, skipped).
        states: list[list[Any] | None] = [threads.get(key) for key in keys]
        names: list[tuple[bytes, str, str] | None] = []
        for key, state in zip(keys, states, strict=True):
            if state is not None:
                names.append((key, state[1][0], state[1][1]))
                continue
            project, _, thread_id = key.decode().partition("/thread/")
            names.append((key, project, thread_id) if thread_id else None)
        return self._fold_columns(
            states, names, encoded.indices.to_pylist(),
            messages.column("position").to_pylist(),
            messages.column("time").cast(pa.int64()).to_pylist(),
            messages.column("event_id").to_pylist(),
            messages.column("version").to_pylist(),
            messages.column("body").to_pylist())

    def _fold_columns(self, states: list[list[Any] | None],
                      names: list[tuple[bytes, str, str] | None], indices: list[int],
                      positions: list[str], times: list[int], ids: list[str],
                      versions: list[int], bodies: list[bytes]) -> list[tuple[Any, ...]]:
        """:meth:`_Fold.add` over columns, inlined (the same checks, rows and states)."""
        fold = self.fold
        threads = fold.threads
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        parse = _message_body.parse
        invalid = 0
        for index, position, ms, event_id, version, body in zip(
                indices, positions, times, ids, versions, bodies, strict=True):
            name = names[index]
            if name is None:
                continue
            parsed = parse(body)
            if parsed is None:
                invalid += 1
                continue
            role, content, metadata, written, project_name = parsed
            row = (name[1], name[2], version, event_id, role, content, metadata,
                   (written and _ms(written)) or ms, position)
            append(row)
            state = states[index]
            if state is None:
                state = states[index] = threads[name[0]] = [1, row, row, True, project_name]
            else:
                state[0] += 1
                state[2] = row
        fold.invalid += invalid
        fold.rows = rows
        return rows

    def final(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
        """Thread rows and project rows (sorted by key), and the invalid messages skipped."""
        fold = self.fold
        return fold.thread_rows(sorted(fold.threads)), fold.project_rows(), fold.invalid
