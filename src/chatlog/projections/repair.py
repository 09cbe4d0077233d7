"""Repair the read model of some partitions only: refold them beside it, then swap them in.

When the log loses events of a partition (a failover promoted a replica that
never received them, a restore from an older snapshot), only the rows that
came from that partition describe events the log no longer holds. Every read
model row is keyed by its ``project``, and a project lives in one partition
(:meth:`EventStore.partition_of`), so the rows of partition ``p`` are exactly
those whose project maps to ``p``. The projector repairs those partitions and
leaves every other row as it is (same rowid, never rewritten):

1. Fold the affected partitions from their first event kept into a fresh file
   ``<live>.repair`` beside the live model, through the ordinary projector
   path (:meth:`Projector.catch_up` of those partitions only).
2. In one write transaction of the live file: delete the affected
   partitions' rows, copy the refolded rows in, and move those partitions'
   checkpoints to where the refold ended. Readers see the old rows or the new
   ones, never a mix. The transaction first checks that the live checkpoint
   is still the one the projector committed (a ``chatlog rebuild`` may have
   switched a new model in meanwhile; the repair is then dropped).

Tables of the projector's own (``projector_*``) are its checkpoint and
metadata. Tables with the columns ``(name, value)`` are counters of skipped
events summed over every partition, which a partition repair cannot split:
they are kept as they are (a lost event that had been skipped stays counted,
and a skipped event the refold applied past the old checkpoint is not
counted, until the next full rebuild). A table
with neither a ``project`` column nor that shape cannot be split by
partition: :func:`splittable` says so, and the projector rebuilds the whole
read model instead.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from chatlog.eventstore.codec import Cursor
from chatlog.eventstore.store import EventStore
from chatlog.projections import _db
from chatlog.projections.base import Projection

#: The SQL function the swap uses to tell a row's partition from its project key.
PARTITION_FUNCTION = "chatlog_partition"
_COUNTER_COLUMNS = ["name", "value"]


def repair_path(live: Path) -> Path:
    """Where the refold of a partition repair of ``live`` is built (deleted after)."""
    return live.with_name(live.name + ".repair")


def remove(path: Path) -> None:
    """Delete the SQLite file ``path`` and its journals (missing ones are fine)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _tables(conn: sqlite3.Connection, schema: str = "main") -> dict[str, list[str]]:
    """Every table of ``schema`` but the projector's own, with its columns in order."""
    names = [r[0] for r in conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'projector_%' ORDER BY name")]
    return {name: [r[1] for r in conn.execute(f'PRAGMA {schema}.table_info("{name}")')]
            for name in names}


def _partition_tables(conn: sqlite3.Connection,
                      schema: str = "main") -> dict[str, list[str]] | None:
    """The tables whose rows belong to one partition each (by ``project``), or None when
    some table can be split neither by partition nor kept as a counter."""
    split = {}
    for name, columns in _tables(conn, schema).items():
        if "project" in columns:
            split[name] = columns
        elif columns != _COUNTER_COLUMNS:
            return None
    return split


def splittable(conn: sqlite3.Connection) -> bool:
    """Whether every read model table in ``conn`` can be repaired partition by partition."""
    return _partition_tables(conn) is not None


async def refold(store: EventStore, path: Path, projections: Sequence[Projection],
                 partitions: Sequence[int], *, chunk: int = 2000) -> int:
    """Fold ``partitions`` from their first event kept into a fresh file at ``path``.

    Returns how many events were folded. Whatever was at ``path`` is deleted first.
    """
    from chatlog.projections.projector import Projector

    remove(path)
    folder = Projector(store, path, projections, batch_size=chunk, heal_after=0)
    try:
        return await folder.catch_up(partitions)
    finally:
        await folder.stop()


def partition_function(store: EventStore) -> Callable[[object], int]:
    """``project key text -> partition`` for SQL (-1 for a key that is not a UUID)."""

    def partition(project: object) -> int:
        try:
            return store.partition_of(uuid.UUID(str(project)))
        except ValueError:
            return -1

    return partition


def swap_in(conn: sqlite3.Connection, refolded: Path, partitions: Sequence[int],
            partition: Callable[[object], int], expected: Cursor) -> bool:
    """Replace the rows of ``partitions`` in ``conn`` (the live model's writer) by those of
    the file ``refolded``, and their checkpoints by its, in one transaction.

    Returns False, changing nothing, when the live checkpoint is no longer
    ``expected`` or a table cannot be split by partition. Runs on the thread
    that owns ``conn``; no transaction may be open.
    """
    count = len(expected.positions)
    conn.create_function(PARTITION_FUNCTION, 1, partition, deterministic=True)
    conn.execute("ATTACH DATABASE ? AS repair", (str(refolded),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found, _ = _db.read_checkpoint(conn, count)
            tables = _partition_tables(conn)
            if found.positions != expected.positions or tables is None:
                conn.execute("ROLLBACK")
                return False
            theirs = _partition_tables(conn, "repair") or {}
            marks = ", ".join("?" * len(partitions))
            mine = f"{PARTITION_FUNCTION}(project) IN ({marks})"
            for table, columns in tables.items():
                conn.execute(f'DELETE FROM main."{table}" WHERE {mine}', list(partitions))
                if table in theirs:
                    cols = ", ".join(f'"{c}"' for c in columns)
                    conn.execute(f'INSERT INTO main."{table}" ({cols}) SELECT {cols} '
                                 f'FROM repair."{table}" WHERE {mine}', list(partitions))
            rows = conn.execute(
                "SELECT partition, position, events FROM repair.projector_checkpoints"
            ).fetchall()
            refolded_at = {p: (pos, n) for p, pos, n in rows}
            for p in partitions:
                pos, n = refolded_at.get(p, ("0-0", 0))
                _db.write_checkpoint(conn, p, pos, n)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE repair")
    return True
