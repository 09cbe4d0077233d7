"""The read model's SQLite file: connections, the projector's own tables, checkpoints."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatlog.errors import ReadModelOutdated
from chatlog.eventstore.codec import START, Cursor
from chatlog.projections.base import Projection

if TYPE_CHECKING:  # imported when tables or indexes are created, not on every open
    import sqlite_utils

#: Page cache of the projector's connection (KiB).
WRITER_CACHE_KIB = 65_536
#: WAL pages between automatic checkpoints (SQLite's default is 1,000). Each
#: checkpoint ends in an fsync of what it copied, which on a shared disk
#: stalls Valkey's per-append fsync behind it: 16,000 pages (64 MB) made
#: HTTP append p99 23-26 ms, 2,000 pages 22-24 ms at the same rate
#: (bench/bench_http.py); far fewer pages copy hot index pages too often.
WAL_AUTOCHECKPOINT_PAGES = 2_000
#: How long a writer waits for another writer's lock (a rebuild's switch holds it).
BUSY_TIMEOUT_MS = 60_000

#: The read model's schema: bump it whenever a projection's tables or the meaning
#: of their columns change. It is stored in the file (``PRAGMA user_version``);
#: a file of another schema is refused on open, naming ``chatlog rebuild``.
#: Files written before the version was stored hold schema 1.
READ_MODEL_SCHEMA = 1


def schema(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over ``conn`` (the same connection: no new one, no plugins),
    for declaring tables and indexes; the hot paths stay plain ``sqlite3``."""
    import sqlite_utils

    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def desc(column: str) -> Any:
    """``column`` in descending order, in an index :func:`schema` creates."""
    from sqlite_utils.db import DescIndex

    return DescIndex(column)


def create_table(db: sqlite_utils.Database, name: str, columns: dict[str, type],
                 *, pk: str | tuple[str, ...] | None = None,
                 nullable: frozenset[str] = frozenset(),
                 defaults: dict[str, object] | None = None) -> None:
    """``CREATE TABLE IF NOT EXISTS``: every column NOT NULL unless named in ``nullable``."""
    db[name].create(columns, pk=pk, not_null=set(columns) - nullable,  # type: ignore[union-attr]
                    defaults=defaults, if_not_exists=True)


def _create_projector_tables(conn: sqlite3.Connection) -> None:
    db = schema(conn)
    create_table(db, "projector_checkpoints",
                 {"partition": int, "position": str, "events": int}, pk="partition")
    create_table(db, "projector_counters", {"name": str, "value": int}, pk="name")
    create_table(db, "projector_meta", {"name": str, "value": str}, pk="name")


def connect_writer(path: Path) -> sqlite3.Connection:
    """A read-write connection in WAL mode, transactions managed explicitly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    _when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
    conn.execute("PRAGMA synchronous=NORMAL")
    # Deleted and overwritten text is zeroed in the file, not left in free space
    # (an erasure must leave no byte of the erased content behind).
    conn.execute("PRAGMA secure_delete=ON")
    # Live inserts land at random places of the messages index; with SQLite's
    # 2 MiB default cache a large model makes every batch read pages from disk.
    conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    # Checkpoint every 8 MiB: index pages touched by several batches are copied
    # back once, and each checkpoint's fsync stays short (see the constant).
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # A rebuild's switch writes the whole model through the WAL; do not keep it that big.
    conn.execute("PRAGMA journal_size_limit=67108864")
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection (``query_only``); usable from the thread that opened it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA query_only=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _when_unlocked(step: Callable[[], object]) -> None:
    """Run ``step``, again while SQLite answers ``database is locked``.

    Two processes setting up the same fresh file at once can get that answer
    despite the busy timeout (switching to WAL, or a stale read snapshot that
    WAL refuses to upgrade to a write); waiting a little and retrying works.
    """
    for attempt in range(100):
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02)


def create_all(conn: sqlite3.Connection, projections: Sequence[Projection],
               *, indexes: bool = True) -> None:
    """Create the projector's tables and every projection's tables (and indexes).

    Idempotent (``IF NOT EXISTS``), so a retry after a lock conflict is safe. A
    file this code created everything in (tables and indexes) is stamped with
    :func:`schema_fingerprint`; opening it again creates nothing (and imports no
    sqlite-utils, which with numpy cost a sixth of ``chatlog serve``'s start-up).
    """
    stamp = schema_fingerprint(projections) if indexes else None

    def create() -> None:
        check_schema(conn)
        if stamp is not None and _stamp_of(conn) == stamp:
            return
        _create_projector_tables(conn)
        for proj in projections:
            proj.create_schema(conn)
            if indexes:
                proj.create_indexes(conn)
        if stamp is not None:
            conn.execute("INSERT INTO projector_meta (name, value) VALUES (?, ?) ON CONFLICT "
                         "(name) DO UPDATE SET value = excluded.value", (_STAMP, stamp))

    _when_unlocked(create)


#: The ``projector_meta`` row holding the schema fingerprint the file was created with.
_STAMP = "schema_fingerprint"


def schema_fingerprint(projections: Sequence[Projection]) -> str | None:
    """A digest of the code that declares the read model's tables and indexes: the
    source of this module and of each projection's module, and the schema version.
    Any edit there changes it (then the next open runs every ``CREATE ... IF NOT
    EXISTS`` again). None when a source cannot be read (always create)."""
    digest = hashlib.blake2b(f"{READ_MODEL_SCHEMA}".encode(), digest_size=16)
    names = sorted({__name__, *(type(p).__module__ for p in projections)})
    for name in names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path is None:
            return None
        try:
            digest.update(name.encode() + b"\0" + Path(path).read_bytes())
        except OSError:
            return None
    digest.update(",".join(sorted(type(p).__qualname__ for p in projections)).encode())
    return digest.hexdigest()


def _stamp_of(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT value FROM projector_meta WHERE name = ?", (_STAMP,)).fetchone()
    except sqlite3.OperationalError:  # no projector_meta table yet
        return None
    return None if row is None else str(row[0])


def check_schema(conn: sqlite3.Connection) -> None:
    """Stamp a fresh file with the read model schema; refuse a file of another one.

    Raises :class:`~chatlog.errors.ReadModelOutdated` ("read model schema 3,
    this chatlog needs 4: run `chatlog rebuild`").
    """
    needed = READ_MODEL_SCHEMA
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == 0:
        fresh = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is None
        found = needed if fresh else 1
        if found == needed:
            conn.execute(f"PRAGMA user_version = {int(needed)}")
    if found != needed:
        path = conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
        raise ReadModelOutdated(path, found, needed)


def read_checkpoint(conn: sqlite3.Connection, partitions: int) -> tuple[Cursor, list[int]]:
    """The last applied position of each partition, and how many events each has applied."""
    positions = [START] * partitions
    counts = [0] * partitions
    for partition, position, events in conn.execute(
        "SELECT partition, position, events FROM projector_checkpoints"
    ):
        if partition < partitions:
            positions[partition] = position
            counts[partition] = events
    return Cursor(positions), counts


def write_checkpoint(conn: sqlite3.Connection, partition: int, position: str,
                     events: int) -> None:
    conn.execute(
        "INSERT INTO projector_checkpoints (partition, position, events) VALUES (?, ?, ?) "
        "ON CONFLICT (partition) DO UPDATE SET position = excluded.position,"
        " events = excluded.events",
        (partition, position, events),
    )


def add_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
    if value:
        conn.execute(
            "INSERT INTO projector_counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, value),
        )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: value for name, value in conn.execute(
        "SELECT name, value FROM projector_counters")}


def table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone() is not None
