"""SQLite's ceiling for a rebuild of a given log: the same rows, the same settings, alone.

The message rows of the whole log (archive, then hot tail) are folded chunk by
chunk as the rebuild folds them, untimed; then each chunk is written exactly as
the rebuild's writer writes it, timed: the fresh file opened by
``rebuild.open_bulk`` (no journal, no fsync, exclusive lock, 64 MiB cache), the
grouped inserts of ``ConversationsProjection.bulk_write``, a commit every
``rebuild.COMMIT_EVERY`` events, the thread and project rows at the end, then the
indexes. No reading, no folding, no overlap: the most a rebuild of this log could
write per second with these settings on this machine, at this load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.rebuild import CHUNK, COMMIT_EVERY, open_bulk


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def sqlite_ceiling(url: str, prefix: str, archive_dir: str | None,
                         path: Path) -> dict[str, float]:
    """``{"events", "rows_per_s", "cpu_us_per_row", "index_s"}`` of writing the log's
    message rows into ``path`` (deleted first) as a rebuild does."""
    store = await EventStore.open(url, prefix=prefix)
    if archive_dir is not None:
        store.archive = Archive.open(archive_dir)
    _remove(path)
    proj = ConversationsProjection()
    fold = proj.bulk_fold()
    conn = open_bulk(path)
    proj.create_schema(conn)
    conn.execute("BEGIN")
    wall = cpu = 0.0
    events = since_commit = 0

    def timed(step: Any, *args: Any) -> None:
        nonlocal wall, cpu
        w, c = time.perf_counter(), time.thread_time()
        step(*args)
        wall += time.perf_counter() - w
        cpu += time.thread_time() - c

    try:
        for p in range(store.partitions):
            async for item in store.scan(p, chunk=CHUNK):
                if isinstance(item, list):
                    rows, n = fold.rows(item), len(item)
                else:
                    rows, n = fold.rows_batch(item), item.num_rows
                timed(proj.bulk_write, conn, rows)
                events += n
                since_commit += n
                if since_commit >= COMMIT_EVERY:
                    timed(conn.execute, "COMMIT")
                    timed(conn.execute, "BEGIN")
                    since_commit = 0
        timed(proj.bulk_finish, conn, fold.final())
        timed(conn.execute, "COMMIT")
        before = wall
        timed(proj.create_indexes, conn)
        index_s = wall - before
    finally:
        conn.close()
        await store.close()
        _remove(path)
    return {"events": events, "rows_per_s": events / wall,
            "cpu_us_per_row": 1e6 * cpu / max(events, 1), "index_s": index_s}
