"""The reading half of a rebuild: scan the whole log and fold it, here or in a child process.

The archive's segments come as columnar batches and the hot tail as
undecoded entries (:meth:`EventStore.scan`; XRANGE without redis-py's reply
parsing, which halves the cost of reading); each bulk-capable projection
folds both into rows. With ``processes``, this runs in a
child process and sends each chunk's rows down a pipe, so reading and folding
(the child) overlap writing SQLite (the parent) on two cores.

Messages: ``("chunk", partition, last_position, n, rows_per_fold, plain_entries,
unknown)`` per chunk, then ``("done", finals_per_fold)``; ``("error", text)``
from a child that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import marshal
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import pairwise
from typing import IO, Any

from chatlog.errors import ProjectionError
from chatlog.events import ErasureRecorded
from chatlog.eventstore.codec import flat_field
from chatlog.eventstore.store import EventStore
from chatlog.eventstore.tiers import batch_entries

RawEntry = tuple[bytes, list[bytes]]
#: Pipe buffer asked for (Linux allows unprivileged processes up to
#: /proc/sys/fs/pipe-max-size, 1 MiB by default; then smaller frames help).
PIPE_BYTES = 8 << 20
Message = tuple[Any, ...]
#: Frames read from the child's pipe ahead of the writer (an archive batch's is
#: ~6 MB: a few of them bound the memory this costs).
FRAMES_AHEAD = 4
#: The tombstone type, cut at (see :func:`_split_at_erasures`).
ERASURE = ErasureRecorded.event_type.encode()


async def read_folded(
    store: EventStore,
    bulk: Sequence[Any],
    plain_types: frozenset[bytes] | None,
    known: frozenset[bytes],
    chunk: int,
) -> AsyncIterator[Message]:
    """Read every partition from its first event kept; yield folded chunks, then the
    folds' finals.

    :meth:`EventStore.scan` gives the archive's segments as columnar batches,
    folded column by column (no dict or event object per row), then the hot
    tail as entries: in order, no gap, no repeat, even while the archiver runs.

    ``plain_types``: the entries to pass on undecoded (for projections without
    a bulk fold); ``None`` passes every entry, an empty set none.
    """
    folds = [proj.bulk_fold() for proj in bulk]
    ordered = plain_types is None or ERASURE in plain_types
    for p in range(store.partitions):
        scan = store.scan(p, chunk=chunk)
        try:
            async for item in scan:
                for part in _split_at_erasures(item) if ordered else (item,):
                    if isinstance(part, list):
                        yield _folded_entries(p, part, folds, plain_types, known)
                    else:
                        yield _folded_batch(p, part, folds, plain_types, known)
        finally:
            await scan.aclose()  # type: ignore[attr-defined]
    yield ("done", [fold.final() for fold in folds])


def _entry_types(entries: list[RawEntry]) -> list[bytes]:
    """Each entry's type: where the append script puts it, else looked up."""
    return [flat[3] if len(flat) > 3 and flat[2] == b"t" else flat_field(flat, b"t")
            for _, flat in entries]


def _split_at_erasures(item: Any) -> list[Any]:
    """A chunk (entries or an archive batch) cut after each erasure tombstone.

    The writer applies a chunk's plain events (the tombstone's deletes) after its
    bulk rows; cut there, the tombstone deletes only rows of events before it,
    never those of the scope's fresh history after it in the same chunk.
    """
    if isinstance(item, list):
        types = _entry_types(item)
        if ERASURE not in types:
            return [item]
        cuts = [i + 1 for i, kind in enumerate(types) if kind == ERASURE]
    else:
        import pyarrow.compute as pc

        found = pc.equal(item.column("type"), ERASURE.decode())
        if not pc.any(found).as_py():
            return [item]
        cuts = [i + 1 for i, hit in enumerate(found.to_pylist()) if hit]
    size = len(item) if isinstance(item, list) else item.num_rows
    bounds = [0, *(c for c in cuts if c < size), size]
    if len(bounds) == 2:
        return [item]
    if isinstance(item, list):
        return [item[a:b] for a, b in pairwise(bounds)]
    return [item.slice(a, b - a) for a, b in pairwise(bounds)]


def _folded_entries(partition: int, entries: list[RawEntry], folds: Sequence[Any],
                    plain_types: frozenset[bytes] | None,
                    known: frozenset[bytes]) -> Message:
    """A chunk message of hot-tail entries (a chunk of one kind, as most are, is
    filtered and counted by its distinct types, not entry by entry)."""
    last = entries[-1][0].decode()
    rows = [fold.rows(entries) for fold in folds]
    types = _entry_types(entries)
    present = set(types)
    if plain_types is None:
        plain = entries
    elif plain_types & present:
        plain = [e for e, t in zip(entries, types, strict=True) if t in plain_types]
    else:
        plain = []
    unknown = 0 if present <= known else len(types) - sum(map(known.__contains__, types))
    return ("chunk", partition, last, len(entries), rows, plain, unknown)


def _folded_batch(partition: int, batch: Any, folds: Sequence[Any],
                  plain_types: frozenset[bytes] | None, known: frozenset[bytes]) -> Message:
    """A chunk message of an archive batch, folded column by column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = batch.column("type")
    # The batch's types (a batch of one kind, as most are, needs no filtering below).
    present = {t.encode() for t in pc.unique(types).to_pylist()}
    rows = [fold.rows_batch(batch) if hasattr(fold, "rows_batch")
            else fold.rows(batch_entries(batch)) for fold in folds]
    if plain_types is None:
        plain = batch_entries(batch)
    elif plain_types & present:
        wanted = pa.array([t.decode() for t in plain_types], pa.string())
        plain = batch_entries(batch.filter(pc.is_in(types, value_set=wanted)))
    else:
        plain = []
    unknown = 0
    if not present <= known:
        names = pa.array([t.decode() for t in known], pa.string())
        unknown = batch.num_rows - int(pc.sum(pc.is_in(types, value_set=names)).as_py() or 0)
    last = str(batch.column("position")[-1])
    return ("chunk", partition, last, batch.num_rows, rows, plain, unknown)


async def _read_opened(url: str, prefix: str, partitions: int, archive_url: str | None,
                       *args: Any) -> AsyncIterator[Message]:
    """:func:`read_folded` on a store opened here (in the child process), reading the
    same archive as the parent's store."""
    archive = None
    if archive_url is not None:
        from chatlog.eventstore.archive import Archive

        archive = Archive.open(archive_url)
    store = await EventStore.open(url, partitions=partitions, prefix=prefix, archive=archive)
    try:
        async for msg in read_folded(store, *args):
            yield msg
    finally:
        await store.close()


_HEADER = struct.Struct("<Q")


def _write_frame(out: IO[bytes], msg: Message) -> None:
    # marshal: the frames hold only str, bytes, int, lists and tuples; it dumps
    # several times faster than pickle, and the child is the busier side.
    data = marshal.dumps(msg)
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def _read_frame(src: IO[bytes]) -> bytes | None:
    """One frame's bytes (None at the end of the pipe)."""
    head = src.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    data = src.read(size)
    if len(data) < size:
        return None
    return data


def _pump(src: IO[bytes], frames: queue.Queue[bytes | None]) -> None:
    """On the pump thread: frames from the pipe into ``frames`` (None at the end).

    The pipe holds 1 MiB (Linux's limit for unprivileged processes) and an
    archive batch's frame is several: without a thread emptying it while the
    writer writes SQLite, the child waited for the writer at every frame and
    the two processes took turns instead of overlapping. Reading releases the
    GIL, and the frames are decoded by the writer, so this thread and the
    writer's ``executemany`` do not fight over it.
    """
    try:
        while True:
            data = _read_frame(src)
            frames.put(data)
            if data is None:
                return
    except (OSError, ValueError):  # the pipe was closed under it (close())
        frames.put(None)


def child_main() -> None:
    """Entry point of the child: arguments pickled on stdin, frames out on stdout."""
    args = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    gc.disable()  # a short-lived process that makes no cycles (see chatlog.tuning.gc_paused)

    async def run() -> None:
        async for msg in _read_opened(*args):
            _write_frame(out, msg)

    try:
        asyncio.run(run())
    except (BrokenPipeError, KeyboardInterrupt):  # the parent went away or gave up
        pass
    except BaseException as exc:
        with contextlib.suppress(OSError):
            _write_frame(out, ("error", f"{exc.__class__.__name__}: {exc}"))


class ChildReader:
    """:func:`read_folded` in a child process; iterate :meth:`messages` (blocking).

    Arguments: the store's URL, key prefix and partition count (the child opens
    the store itself), then :func:`read_folded`'s after the store.

    The child is ``python -m chatlog.projections._rebuild_child`` (not
    ``multiprocessing``, which would re-import the caller's main module).
    """

    def __init__(self, *args: Any) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "chatlog.projections._rebuild_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1 << 20,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # A pipe that holds whole frames lets the child fold the next chunk while
        # this process reads the last one (measured: 64 KiB pipes halve the rate).
        for size in (PIPE_BYTES, 1 << 20):
            try:
                fcntl.fcntl(self._proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, size)
                break
            except (OSError, AttributeError):  # not Linux, or above pipe-max-size
                continue
        self._proc.stdin.write(pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))
        self._proc.stdin.close()
        self._frames: queue.Queue[bytes | None] = queue.Queue(FRAMES_AHEAD)
        self._pump: threading.Thread | None = None

    def messages(self) -> Iterator[Message]:
        assert self._proc.stdout is not None
        frames = self._frames
        self._pump = pump = threading.Thread(target=_pump, args=(self._proc.stdout, frames),
                                             name="rebuild-pipe", daemon=True)
        pump.start()
        while True:
            data = frames.get()
            msg: Message | None = None if data is None else marshal.loads(data)
            if msg is None:
                code = self._proc.wait(5)
                raise ProjectionError(
                    "the rebuild's reader process ended before the end of the log "
                    f"(exit code {code})")
            if msg[0] == "error":
                raise ProjectionError(f"reading the log for the rebuild failed: {msg[1]}")
            yield msg
            if msg[0] == "done":
                return

    def close(self) -> None:
        """Stop the child (by its own handle) and release the pipe."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(5)
        pump = self._pump
        if pump is not None:
            # The killed child closed its end: the pump reads the end of the pipe, or
            # waits on a full queue; drain that so it can finish.
            while pump.is_alive():
                pump.join(0.05)
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._frames.get_nowait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

