"""Property: an incremental read model, crashed and resumed anywhere, equals a clean rebuild.

Random appends (several projects and threads, names differing only in case
or padding, retries of the same event id, events of unknown types) are
interleaved with projector runs that crash at random points: between
batches (a run that stops after some batches) and inside a batch (the
projection raises after k events, so the batch's transaction rolls back).
Each run is a new projector on the same file, like a restarted process.
Archiving passes move the oldest events into archive segments in the middle
of the run (sometimes "crashing" after publishing, before trimming Redis, so
events sit in both tiers). At the end the incremental model, caught up,
equals a rebuild of the same log (archive batches, then Redis) row for row,
and holds exactly the messages that were appended.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatlog.events import NewEvent, RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from tests.helpers import message
from tests.projections._util import dump
from tests.sealing import archiver

PROJECT_NAMES = ["Blog-Project", "blog-project", " BLOG-PROJECT ", "Docs", "docs ", "Ünïcode"]
THREADS = ["thread-1", "thread-2", "thread-3"]


class Crash(Exception):
    """The simulated crash inside a batch."""


class CrashingProjection:
    """Conversations, but the batch that reaches event ``after`` fails halfway through."""

    def __init__(self, after: int | None) -> None:
        self.inner = ConversationsProjection()
        self.name = self.inner.name
        self.event_types = self.inner.event_types
        self.left = after

    def create_schema(self, conn: sqlite3.Connection) -> None:
        self.inner.create_schema(conn)

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        self.inner.create_indexes(conn)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if self.left is not None and self.left < len(events):
            self.inner.apply(conn, events[: self.left])  # written, then rolled back
            raise Crash(f"crash after {self.left} events of a batch of {len(events)}")
        self.inner.apply(conn, events)
        if self.left is not None:
            self.left -= len(events)


class ProjectionMachine(RuleBasedStateMachine):
    def __init__(self, redis_url: str, workdir: Path) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(dir=workdir))
        self.path = self.dir / "incremental.sqlite"
        self.archive_url = str(self.dir / "archive")
        self.store: EventStore = self.loop.run_until_complete(
            EventStore.open(redis_url, prefix=f"h{uuid.uuid4().hex[:12]}",
                            archive=Archive.open(self.archive_url)))
        #: event id -> (project key, thread, content) of every message in the log
        self.appended: dict[str, tuple[uuid.UUID, str, str]] = {}
        #: project key -> the raw name of its first message (kept for display)
        self.first_names: dict[uuid.UUID, str] = {}
        self.retryable: list[NewEvent] = []

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize()
    def start(self) -> None:
        self.run(self.store.append_one(message("Blog-Project", "thread-1", "seed")))
        self.appended_from_log()

    def appended_from_log(self) -> None:
        for ev in self.run(self.store.read(0, "0-0", 10_000)):
            if ev.type == "message.appended":
                self.appended[str(ev.id)] = (ev.project, ev.aggregate_id, ev.data["content"])
                self.first_names.setdefault(ev.project, ev.project_name)

    @rule(name=st.sampled_from(PROJECT_NAMES), thread=st.sampled_from(THREADS),
          content=st.text(max_size=12), supplied=st.booleans())
    def append(self, name: str, thread: str, content: str, supplied: bool) -> None:
        ev = message(name, thread, content, event_id=uuid.uuid4() if supplied else None)
        result = self.run(self.store.append_one(ev))
        assert not result.duplicate
        self.appended[str(ev.id)] = (ev.project, thread, content)
        self.first_names.setdefault(ev.project, ev.project_name)
        if supplied:
            self.retryable.append(ev)

    @precondition(lambda self: bool(self.retryable))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        ev = data.draw(st.sampled_from(self.retryable))
        result = self.run(self.store.append_one(ev))
        assert result.duplicate  # the log keeps one copy; so must the read model

    @rule(name=st.sampled_from(PROJECT_NAMES))
    def append_unknown_type(self, name: str) -> None:
        key = normalize_project_id(name)
        self.run(self.store.append_one(NewEvent(
            type="message.reacted", project=key.key, project_name=key.display,
            aggregate_type="thread", aggregate_id="thread-1", data={"emoji": ":)"})))

    @rule(hot=st.integers(1, 6), segment=st.integers(1, 8), crash=st.booleans())
    def archive(self, hot: int, segment: int, crash: bool) -> None:
        """A pass of the real archiver keeps ``hot`` events in Redis (once over it by one)
        and seals the rest; or, as a crash after publishing, one segment in both tiers."""
        sealer = archiver(self.store, Archive.open(self.archive_url), hot=hot, segment=segment)
        self.run(sealer.run_pass(crash_before_trim=crash))

    @rule(batch=st.integers(1, 6), crash_after=st.none() | st.integers(0, 12))
    def run_projector(self, batch: int, crash_after: int | None) -> None:
        """A (re)started projector catches up; it may crash inside a batch."""
        pj = Projector(self.store, self.path, [CrashingProjection(crash_after)],
                       batch_size=batch)
        try:
            self.run(pj.catch_up())
        except Crash:
            pass
        finally:
            self.run(pj.stop())

    @rule(batches=st.integers(1, 3), batch=st.integers(1, 4))
    def stop_between_batches(self, batches: int, batch: int) -> None:
        """A projector that applies a few batches and is stopped (killed) between two."""
        pj = Projector(self.store, self.path, [ConversationsProjection()], batch_size=batch)

        async def some_batches() -> None:
            await pj.open()
            for _ in range(batches):
                events = await self.store.read(0, pj.checkpoint.positions[0], batch)
                if events:
                    await pj._commit(events)

        try:
            self.run(some_batches())
        finally:
            self.run(pj.stop())

    @invariant()
    def checkpoint_never_passes_the_head(self) -> None:
        if not self.path.exists():
            return
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute(
                "SELECT position FROM projector_checkpoints WHERE partition = 0").fetchone()
        finally:
            conn.close()
        if row is not None:
            head = self.run(self.store.head(0))
            assert tuple(map(int, row[0].split("-"))) <= tuple(map(int, head.split("-")))

    def check_aggregates(self) -> None:
        """Projects and threads against a plain fold of what was appended (in order)."""
        names: dict[uuid.UUID, str] = {}
        counts: dict[tuple[uuid.UUID, str], int] = {}
        last: dict[tuple[uuid.UUID, str], str] = {}
        for project, thread, content in self.appended.values():
            names.setdefault(project, self.first_names[project])
            counts[(project, thread)] = counts.get((project, thread), 0) + 1
            last[(project, thread)] = content
        conn = sqlite3.connect(self.path)
        try:
            projects = {uuid.UUID(p): (n, tc, mc) for p, n, tc, mc in conn.execute(
                "SELECT project, name, thread_count, message_count FROM projects")}
            threads = {(uuid.UUID(p), t): (c, prev) for p, t, c, prev in conn.execute(
                "SELECT project, thread_id, message_count, last_preview FROM threads")}
        finally:
            conn.close()
        assert projects == {
            p: (names[p], sum(1 for k in counts if k[0] == p),
                sum(c for k, c in counts.items() if k[0] == p))
            for p in names}
        assert threads == {k: (c, last[k]) for k, c in counts.items()}

    def teardown(self) -> None:
        try:
            final = Projector(self.store, self.path, [ConversationsProjection()])
            try:
                self.run(final.catch_up())
            finally:
                self.run(final.stop())
            rebuilt = self.run(build(self.store, self.dir / "rebuilt.sqlite",
                                     [ConversationsProjection()]))
            incremental = dump(self.path)
            assert incremental == dump(rebuilt.path)
            # and both hold exactly the messages appended (each once)
            conn = sqlite3.connect(self.path)
            try:
                rows = conn.execute(
                    "SELECT message_id, project, thread_id, content FROM messages").fetchall()
            finally:
                conn.close()
            assert {r[0]: (uuid.UUID(r[1]), r[2], r[3]) for r in rows} == self.appended
            assert len(rows) == len(self.appended)
            self.check_aggregates()
        finally:
            self.run(self.store.close())
            self.loop.close()


def test_incremental_with_crashes_equals_rebuild(redis_url: str, tmp_path: Path) -> None:
    run_state_machine_as_test(
        lambda: ProjectionMachine(redis_url, tmp_path),
        settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
