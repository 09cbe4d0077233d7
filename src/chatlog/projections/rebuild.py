"""Rebuild the read models from the log, beside the live ones, and switch atomically.

How it works:

1. Take ``<live>.rebuild.lock`` (one rebuild at a time) and delete what an
   interrupted rebuild left behind (``<live>.rebuild`` and its journals).
2. Bulk-load a fresh file ``<live>.rebuild``: no journal, no fsync (the file
   is thrown away if anything fails), large transactions, tables first and
   indexes after loading. Undecoded stream entries go through each
   projection's bulk loader when it has one (no pydantic on the hot path),
   else through ``apply``. The server reads the next chunk while this
   process folds and writes the current one (optionally, reading and folding
   run in a child process instead: :mod:`chatlog.projections._reader`).
3. Create the indexes, then catch up through the ordinary projector path on
   that file, so the model ends at (or near) the head.
4. Switch: when there is no live file yet, hard-link the new one into place
   (atomic, fails if one appeared). Otherwise copy it into the live file with
   SQLite's online backup API, which writes the whole new content in **one
   write transaction** of the live WAL database: readers in any process see
   the old model or the new one, never a mix, and need not reopen anything.
   A projector running in ``chatlog serve`` notices on its next batch that
   the checkpoint in the file is not the one it committed, and resumes from
   the new one (see :mod:`chatlog.projections.projector`). When the caller
   knows no other process has the live file open (``chatlog rebuild`` holding
   the data dir's lock: no server runs), the new file is renamed over it
   instead, after an fsync: as atomic, without writing the model twice.

A rebuild reads the log from its first event kept. After a deliberate
deletion (``chatlog delete-before``), the rebuilt model holds only what the
log still holds: the deleted events' messages and workflow rows are gone
from it too ("rebuild keeps only what the log keeps"), while the live model
keeps them until the next rebuild. Archiving deletes nothing, so a rebuild
of an archived log equals the incremental model row for row.

Interrupted at any moment (Ctrl-C, kill -9): before the switch the live
file was never opened for writing; during it, the backup's transaction is
rolled back by SQLite. The next rebuild deletes the leftovers and starts over.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatlog.errors import ProjectionError
from chatlog.events import RecordedEvent, known_types
from chatlog.eventstore.codec import START, Cursor, decode_entry, flat_field, flat_fields
from chatlog.eventstore.store import EventStore
from chatlog.projections import _db
from chatlog.projections._flush import BackgroundFlush
from chatlog.projections._reader import ChildReader, read_folded
from chatlog.projections.base import BulkProjection, Projection
from chatlog.tuning import gc_paused

log = logging.getLogger(__name__)

#: Stream entries read per XRANGE during a rebuild.
CHUNK = 5_000
#: The GIL switch interval (s) while folding and writing overlap (Python's default: 5 ms).
SWITCH_INTERVAL = 0.0002
#: Folded chunks that may wait for the writer thread (each holds its rows: ~10 MB).
WRITE_AHEAD = 3
#: Page cache (KiB) while the indexes are built, also the size of the sorted runs.
INDEX_CACHE_KIB = 16_384
#: SQLite's helper threads sorting an index's runs (``PRAGMA threads``).
INDEX_SORT_THREADS = 1
#: Events per transaction in the throwaway file.
COMMIT_EVERY = 200_000

Progress = Callable[[int, int], None]


class RebuildInterrupted(ProjectionError):
    """The rebuild was asked to stop (its ``stop`` event was set); nothing was switched."""

    title = "Rebuild interrupted"


class RebuildRunning(ProjectionError):
    """Another rebuild holds the lock."""

    status = 409
    title = "Rebuild already running"


@dataclass(frozen=True)
class BuildResult:
    path: Path
    events: int
    checkpoint: Cursor
    seconds: float


def rebuild_path(live: Path) -> Path:
    """Where a rebuild of ``live`` is built (deleted when a rebuild starts or fails)."""
    return live.with_name(live.name + ".rebuild")


def _remove_db(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


@contextlib.contextmanager
def rebuild_lock(live: Path) -> Iterator[None]:
    """Hold ``<live>.rebuild.lock`` (released when the process ends, however it ends)."""
    live.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(live.with_name(live.name + ".rebuild.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RebuildRunning(
                f"another rebuild of {live} is running; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def open_bulk(path: Path) -> sqlite3.Connection:
    """A connection to a rebuild's fresh file, set for bulk loading: no journal, no
    fsync, one exclusive lock, a 64 MiB cache (the file is thrown away if anything
    fails; :func:`switch` makes it durable once). The benches measure SQLite's
    ceiling through it too."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=FILE")
    return conn


class _Writer:
    """Runs on the writer thread: writes folded chunks into the fresh file."""

    def __init__(self, conn: sqlite3.Connection, bulk: Sequence[BulkProjection],
                 plain: Sequence[tuple[Projection, frozenset[bytes] | None]],
                 partitions: int, on_progress: Progress | None, total: int,
                 stop: threading.Event | None) -> None:
        self.conn = conn
        self.stop = stop
        self.bulk = bulk
        self.plain = plain
        self.positions = [START] * partitions
        self.counts = [0] * partitions
        self.unknown = 0
        self.done = 0
        self.total = total
        self.on_progress = on_progress
        self.since_commit = 0
        self.stopped = False
        #: Writes the file back to disk while it loads (see :mod:`._flush`).
        self.flush: BackgroundFlush | None = None

    def write(self, msg: tuple[Any, ...]) -> None:
        if self.stopped:
            raise asyncio.CancelledError()
        if self.stop is not None and self.stop.is_set():
            raise RebuildInterrupted("the rebuild was interrupted; the live read model is "
                                     "untouched")
        conn = self.conn
        if msg[0] == "done":
            for bulk, final in zip(self.bulk, msg[1], strict=True):
                bulk.bulk_finish(conn, final)
            return
        _, partition, last, n, rows, plain_entries, unknown = msg
        for bulk, proj_rows in zip(self.bulk, rows, strict=True):
            bulk.bulk_write(conn, proj_rows)
        for proj, wanted in self.plain:
            events: list[RecordedEvent] = [
                decode_entry(partition, pos, flat_fields(flat)) for pos, flat in plain_entries
                if wanted is None or flat_field(flat, b"t") in wanted
            ]
            if events:
                proj.apply(conn, events)
        self.unknown += unknown
        self.positions[partition] = last
        self.counts[partition] += n
        self.done += n
        self.since_commit += n
        if self.since_commit >= COMMIT_EVERY:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            self.since_commit = 0
            if self.flush is not None:
                self.flush.kick()
        if self.on_progress is not None:
            self.total = max(self.total, self.done)
            self.on_progress(self.done, self.total)

    def drain(self, reader: ChildReader) -> None:
        for msg in reader.messages():
            self.write(msg)


def _spawn_reader(store: EventStore, args: tuple[Any, ...]) -> ChildReader:
    """The child process that reads and folds the log, started before anything else of
    the rebuild: its start (imports, opening the store and the archive: 1-2 s) then
    overlaps this process's (the count of events, the fresh file's tables), and its
    first frames wait in the pipe."""
    archive_url = store.archive.url if store.archive is not None else None
    return ChildReader(store.url, store.keys.prefix, store.partitions, archive_url, *args)


async def _load(loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, writer: _Writer,
                store: EventStore, args: tuple[Any, ...], reader: ChildReader | None) -> None:
    """Read and fold the whole log (here, or in ``reader``'s child process) into ``writer``."""
    if reader is not None:
        try:
            await loop.run_in_executor(executor, writer.drain, reader)
        finally:
            writer.stopped = True
        return
    # The writer thread writes chunks while this one folds the next ones. sqlite3
    # releases the GIL while SQLite steps a statement, so with rows inserted
    # hundreds to a statement the writer spends most of its time without it; a
    # short switch interval gives it back to the writer soon after each step
    # (with the default 5 ms the writer waited for it after every statement:
    # that overlap measured slower than none). Up to WRITE_AHEAD chunks wait for
    # the writer: a chunk that folds slowly (many threads, long bodies) and one
    # that writes slowly no longer make the other side wait (one chunk ahead, the
    # fold waited for the writer ~3 s of a 3M-event load).
    pending: collections.deque[asyncio.Future[None]] = collections.deque()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        async for msg in read_folded(store, *args):
            while len(pending) >= WRITE_AHEAD:
                await pending.popleft()
            pending.append(loop.run_in_executor(executor, writer.write, msg))
        while pending:
            await pending.popleft()
    finally:
        sys.setswitchinterval(interval)
        writer.stopped = True
        # the writes queued or in flight end before the file is closed
        await asyncio.gather(*pending, return_exceptions=True)


async def build(
    store: EventStore,
    path: Path,
    projections: Sequence[Projection],
    *,
    on_progress: Progress | None = None,
    chunk: int = CHUNK,
    processes: bool = False,
    stop: threading.Event | None = None,
) -> BuildResult:
    """Build a complete read model of the whole log in a fresh file at ``path``.

    Whatever is at ``path`` is deleted first. The result is caught up to the
    head as it was when loading ended, with a checkpoint and indexes.
    ``processes``: read and fold in a child process while this one writes.
    Off by default: on a busy 2-core machine the extra copying (pickling the
    rows across) cost more than the overlap won (see bench/bench_rebuild.py).
    """
    started = time.perf_counter()
    bulk = [p for p in projections if isinstance(p, BulkProjection)]
    plain: list[tuple[Projection, frozenset[bytes] | None]] = [
        (proj, frozenset(t.encode() for t in proj.event_types))
        for proj in projections if not isinstance(proj, BulkProjection)
    ]
    plain_types: frozenset[bytes] | None = frozenset()
    for _, wanted in plain:
        plain_types = None if wanted is None or plain_types is None else plain_types | wanted
    known = frozenset(t.encode() for t in known_types())
    args = (bulk, plain_types, known, chunk)
    reader = _spawn_reader(store, args) if processes else None
    try:
        return await _build(store, path, projections, plain, reader, args, started,
                            on_progress=on_progress, chunk=chunk, stop=stop)
    finally:
        if reader is not None:
            await asyncio.to_thread(reader.close)


async def _build(store: EventStore, path: Path, projections: Sequence[Projection],
                 plain: list[tuple[Projection, frozenset[bytes] | None]],
                 reader: ChildReader | None, args: tuple[Any, ...], started: float, *,
                 on_progress: Progress | None, chunk: int,
                 stop: threading.Event | None) -> BuildResult:
    """:func:`build` once its reader process (if any) is started."""
    bulk = args[0]
    _remove_db(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = (await store.status()).events
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild") as executor:
        conn = await loop.run_in_executor(executor, open_bulk, path)
        writer = _Writer(conn, bulk, plain, store.partitions, on_progress, total, stop)
        writer.flush = flush = BackgroundFlush(path)
        try:
            def setup() -> None:
                _db.create_all(conn, projections, indexes=False)
                conn.execute("BEGIN")

            await loop.run_in_executor(executor, setup)
            with gc_paused():
                await _load(loop, executor, writer, store, args, reader)

            loaded = time.perf_counter()
            log.info("rebuild: loaded %d events in %.2f s", writer.done, loaded - started)

            def finish() -> None:
                for q in range(store.partitions):
                    _db.write_checkpoint(conn, q, writer.positions[q], writer.counts[q])
                _db.add_counter(conn, "skipped_unknown", writer.unknown)
                conn.execute(
                    "INSERT INTO projector_meta (name, value) VALUES ('generation', ?), "
                    "('built_at', ?)", (str(uuid.uuid4()), str(time.time())))
                conn.execute("COMMIT")
                flush.kick()  # the tables go to disk while the indexes are built
                # Each index is sorted in runs the size of the page cache: small runs,
                # one sorted on SQLite's helper thread while the next is filled (the
                # load's 64 MiB made the index build the rebuild's peak of memory).
                conn.execute(f"PRAGMA cache_size=-{INDEX_CACHE_KIB}")
                conn.execute(f"PRAGMA threads={INDEX_SORT_THREADS}")
                for proj in projections:
                    proj.create_indexes(conn)
                conn.execute("PRAGMA journal_mode=DELETE")

            await loop.run_in_executor(executor, finish)
            log.info("rebuild: aggregates and indexes in %.2f s", time.perf_counter() - loaded)
        finally:
            await asyncio.shield(loop.run_in_executor(executor, conn.close))
            await asyncio.to_thread(flush.close)
    done = writer.done
    # Events appended while the indexes were built: the ordinary path, on this file.
    from chatlog.projections.projector import Projector

    tail = Projector(store, path, projections, batch_size=chunk, heal_after=0)
    try:
        done += await tail.catch_up()
        checkpoint = tail.checkpoint
    finally:
        await tail.stop()
    if on_progress is not None:
        on_progress(done, max(writer.total, done))
    log.info("rebuild: built %d events in %.2f s", done, time.perf_counter() - started)
    return BuildResult(path, done, checkpoint, time.perf_counter() - started)


def switch(built: Path, live: Path, *, replace: bool = False) -> None:
    """Make ``built`` the live read model at ``live``, atomically for every reader.

    ``replace``: the caller knows no other process has ``live`` open (it holds the
    data dir's lock: no ``chatlog serve`` runs); then ``built`` is renamed over it,
    instead of copied into it through its WAL (seconds for a large model).
    """
    conn = sqlite3.connect(built, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # what the live file runs in
    finally:
        conn.close()
    if replace and live.exists():
        _replace(built, live)
        return
    if not live.exists():
        for suffix in ("-wal", "-shm"):  # strays of a file that is gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{live}{suffix}")
        _fsync(built)  # built without journal or fsync: on disk before it is published
        try:
            os.link(built, live)  # atomic; refuses if a live file appeared meanwhile
        except FileExistsError:
            pass
        else:
            _fsync(live.parent)
            return
    src = sqlite3.connect(built, isolation_level=None)
    dst = _db.connect_writer(live)
    try:
        src.backup(dst)
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()


def _replace(built: Path, live: Path) -> None:
    """Rename ``built`` over ``live`` (no other process has it open), durably: the old
    model's WAL is checkpointed into it first (its journal files must not outlive it,
    or SQLite would apply them to the new file), the new file is on disk before the
    rename, the rename is on disk after it. A crash leaves the old model or the new."""
    old = sqlite3.connect(live, isolation_level=None)
    try:
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        old.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{live}{suffix}")
    _fsync(built)
    os.replace(built, live)
    _fsync(live.parent)


def _fsync(path: Path) -> None:
    """fsync a file or a directory (its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def rebuild(
    store: EventStore,
    live: Path,
    projections: Sequence[Projection] | None = None,
    *,
    on_progress: Progress | None = None,
    chunk: int = CHUNK,
    processes: bool = False,
    stop: threading.Event | None = None,
    sole_user: Callable[[], contextlib.AbstractContextManager[bool]] | None = None,
) -> BuildResult:
    """Rebuild every read model of ``live`` from the log and switch to it.

    ``sole_user``: entered around the switch, says whether no other process can have
    ``live`` open meanwhile; then the new file is renamed over it (see :func:`switch`).

    Raises :class:`RebuildRunning` when another rebuild is in progress, and
    :class:`RebuildInterrupted` when ``stop`` is set before the switch (it is
    checked between chunks, from any thread or a signal handler; a stop
    during the switch itself leaves the old model or the new one, never a mix).
    """
    if projections is None:
        from chatlog.projections.registry import default_projections

        projections = default_projections()
    live = Path(live)
    temp = rebuild_path(live)
    started = time.perf_counter()
    with rebuild_lock(live):
        _remove_db(temp)
        try:
            result = await build(store, temp, projections, on_progress=on_progress, chunk=chunk,
                                 processes=processes, stop=stop)
            if stop is not None and stop.is_set():
                raise RebuildInterrupted(
                    "the rebuild was interrupted before the switch; the live read model is "
                    "untouched")
            switching = time.perf_counter()
            def switch_now() -> None:
                with sole_user() if sole_user is not None else contextlib.nullcontext(
                        False) as alone:
                    switch(temp, live, replace=alone)

            await asyncio.to_thread(switch_now)
            log.info("rebuild: switched in %.2f s", time.perf_counter() - switching)
        finally:
            _remove_db(temp)
    return BuildResult(live, result.events, result.checkpoint, time.perf_counter() - started)
