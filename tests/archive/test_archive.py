"""The archive API on a local directory: segments of real stream entries (appended to
real Valkey), read back by position, by aggregate and in columnar batches."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatlog.errors import ArchiveConflict, ArchiveCorrupt
from chatlog.events import aggregate_key
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import BATCH_COLUMNS, Archive
from chatlog.identity import normalize_project_id
from tests.helpers import message

THREADS = 7
Entry = tuple[bytes, list[bytes]]


@pytest.fixture
async def log(store: EventStore) -> list[Entry]:
    """140 message events over THREADS threads, appended concurrently: the log's entries."""
    n = 140

    async def thread(t: int) -> None:
        for i in range(t, n, THREADS):
            await store.append_one(message(thread_id=f"t{t}", content=f"m{i}"))

    await asyncio.gather(*(thread(t) for t in range(THREADS)))
    entries = [(pos, list(flat)) for pos, flat in await store.read_flat(0, "0-0", n + 1)]
    assert len(entries) == n
    return entries


def publish(archive: Archive, entries: list[Entry], *cuts: int, rows: int = 16,
            fence: int = 1) -> None:
    """Publish ``entries`` as segments split at ``cuts``."""
    bounds = [0, *cuts, len(entries)]
    for a, b in itertools.pairwise(bounds):
        archive.publish(archive.stage(0, entries[a:b], row_group_rows=rows), fence=fence)


def thread_key(thread: str) -> str:
    project = normalize_project_id("Blog-Project").key
    return aggregate_key(project, "thread", thread)


def test_reads_by_position_give_back_the_stream_entries(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:120]
    archive = Archive.open(str(tmp_path / "archive"))
    publish(archive, entries, 50, 90)
    reader = Archive.open(f"file://{tmp_path / 'archive'}")
    assert [s.count for s in reader.segments(0)] == [50, 40, 30]
    assert reader.oldest(0) == entries[0][0].decode()
    assert reader.newest(0) == entries[-1][0].decode()
    assert reader.read_flat(0, "0-0", 1000) == entries
    for i in (0, 15, 16, 49, 50, 51, 89, 100, 118, 119):
        after = entries[i][0].decode()
        assert reader.read_flat(0, after, 7) == entries[i + 1 : i + 8], i
    paged: list[Entry] = []
    after = "0-0"
    while page := reader.read_flat(0, after, 9):
        paged += page
        after = page[-1][0].decode()
    assert paged == entries
    assert reader.read_flat(0, "0-0", 0) == []
    assert reader.segments(1) == [] and reader.newest(1) is None


def test_a_read_from_a_cursor_opens_only_the_segments_after_it(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:80]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries, 40)
    first = archive.segments(0)[0]
    Path(first.path).write_bytes(b"not parquet")  # reading it now would fail
    reader = Archive.open(str(tmp_path))
    assert reader.read_flat(0, entries[39][0].decode(), 100) == entries[40:]
    assert sum(b.num_rows for b in reader.iter_batches(0, entries[45][0].decode())) == 34
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow says about garbage
        reader.read_flat(0, entries[38][0].decode(), 5)


def test_aggregate_reads_use_the_index(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:140]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries, 60, 100)
    for t in range(THREADS):
        key = thread_key(f"t{t}")
        want = [e for e in entries if e[1][5] == key.encode()]
        assert archive.read_aggregate(0, key) == want
        assert [int(e[1][7]) for e in want] == list(range(1, len(want) + 1))
        assert archive.read_aggregate(0, key, from_version=5, limit=3) == want[4:7]
        assert archive.read_aggregate(0, key, from_version=len(want) + 1) == []
    assert archive.read_aggregate(0, thread_key("nobody")) == []
    # A segment holding none of an aggregate's row groups is never opened.
    key = thread_key("t3")
    late = [e for e in entries[100:] if e[1][5] == key.encode()]
    Path(archive.segments(0)[0].path).write_bytes(b"garbage")
    Path(archive.segments(0)[1].path).write_bytes(b"garbage")
    reader = Archive.open(str(tmp_path))
    assert reader.read_aggregate(0, key, from_version=int(late[0][1][7])) == late


def test_the_aggregate_index_stays_a_few_runs(log: list[Entry], tmp_path: Path) -> None:
    archive = Archive.open(str(tmp_path))
    reader = Archive.open(str(tmp_path))
    key = thread_key("t5")
    for i in range(0, 140, 5):  # 28 segments
        archive.publish(archive.stage(0, log[i : i + 5], row_group_rows=2), fence=1)
        runs = sorted(p.name for p in (tmp_path / "partition=0").glob("aggregates-*.arrow"))
        assert len(runs) <= 5, runs
        want = [e for e in log[: i + 5] if e[1][5] == key.encode()]
        reader.reload()
        assert reader.read_aggregate(0, key) == want
    stale = Archive.open(str(tmp_path))
    stale.segments(0)  # reads the manifest now; the runs only when first needed
    archive.publish(archive.stage(0, [(b"99999999999999-0", log[0][1])]), fence=1)
    first = log[0][1][5].decode()  # the first entry's aggregate (appends ran concurrently)
    assert stale.read_aggregate(0, first)[0] == log[0]  # its runs were merged


def test_batches_are_columnar_and_start_after_the_cursor(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:60]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries, 30)
    batches = list(archive.iter_batches(0))
    assert all(b.schema.names == BATCH_COLUMNS for b in batches)
    assert [p.encode() for b in batches for p in b.column("position").to_pylist()] == [
        e[0] for e in entries]
    assert [b for bt in batches for b in bt.column("body").to_pylist()] == [
        e[1][9] for e in entries]
    after = list(archive.iter_batches(0, entries[33][0].decode()))
    assert [p.encode() for b in after for p in b.column("position").to_pylist()] == [
        e[0] for e in entries[34:]]
    assert list(archive.iter_batches(0, entries[-1][0].decode())) == []


def test_publish_refuses_overlaps_and_older_fences(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:40]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries[:20], fence=5)
    staged = archive.stage(0, entries[10:30])
    assert archive.read_flat(0, entries[19][0].decode(), 10) == []  # staged is invisible
    with pytest.raises(ArchiveConflict, match="overlaps"):
        archive.publish(staged, fence=5)
    with pytest.raises(ArchiveConflict, match="newer lease"):
        archive.publish(archive.stage(0, entries[20:]), fence=4)
    assert [p.name for p in (tmp_path / "partition=0").iterdir()
            if p.suffix == ".tmp"] == []  # refused segments were removed
    archive.publish(archive.stage(0, entries[20:]), fence=6)
    assert Archive.open(str(tmp_path)).read_flat(0, "0-0", 100) == entries


def test_reload_sees_what_another_writer_published(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:30]
    reader = Archive.open(str(tmp_path))
    assert reader.newest(0) is None
    publish(Archive.open(str(tmp_path)), entries)
    assert reader.newest(0) is None  # cached until reloaded
    reader.reload()
    assert reader.newest(0) == entries[-1][0].decode()
    assert reader.read_flat(0, "0-0", 100) == entries


def test_orphans_of_a_crash_are_removed(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:30]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries[:10])
    staged = archive.stage(0, entries[10:])  # a crash before publish leaves it
    (tmp_path / "partition=0" / "x_y.parquet").write_bytes(b"renamed, never published")
    assert archive.remove_orphans(0) == 2
    assert not Path(staged.tmp_path).exists()
    assert sorted(p.name for p in (tmp_path / "partition=0").iterdir()) == sorted(
        [Path(archive.segments(0)[0].path).name, "manifest.json", "aggregates-1.arrow"])
    assert archive.read_flat(0, "0-0", 100) == entries[:10]


@pytest.mark.parametrize("damage", ["a row lost", "a body changed"])
def test_a_segment_that_does_not_read_back_is_not_staged(
    damage: str, log: list[Entry], tmp_path: Path
) -> None:
    entries = log[:10]
    archive = Archive.open(str(tmp_path))

    def corrupt(step: str) -> None:
        if step == "written":
            (tmp,) = (tmp_path / "partition=0").glob("*.tmp")
            table = pq.read_table(tmp)
            if damage == "a row lost":
                table = table.slice(1)
            else:
                bodies = table.column("body").to_pylist()
                bodies[3] = bodies[3].replace(b"m", b"M")
                table = table.set_column(9, "body", pa.array(bodies, pa.binary()))
            pq.write_table(table, tmp)

    with pytest.raises(ArchiveCorrupt, match="read back 9 events" if damage == "a row lost"
                       else "read back 10 events"):
        archive.stage(0, entries, on_step=corrupt)
    assert list((tmp_path / "partition=0").iterdir()) == []


def test_delete_before_drops_and_rewrites_segments(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:90]
    archive = Archive.open(str(tmp_path))
    publish(archive, entries, 30, 60)
    assert archive.delete_before(0, entries[45][0].decode()) == 45
    assert archive.oldest(0) == entries[45][0].decode()
    assert archive.deleted_before(0) == entries[45][0].decode()
    assert [s.count for s in archive.segments(0)] == [15, 30]
    reader = Archive.open(str(tmp_path))
    assert reader.read_flat(0, "0-0", 100) == entries[45:]
    key = thread_key("t2")
    assert reader.read_aggregate(0, key) == [e for e in entries[45:] if e[1][5] == key.encode()]
    stale = Archive.open(str(tmp_path))
    stale.segments(0)
    assert archive.delete_before(0, entries[50][0].decode()) == 5  # rewrites a segment
    assert stale.read_flat(0, "0-0", 100) == entries[50:]  # its manifest named the old one
    assert archive.delete_before(0, entries[10][0].decode()) == 0  # nothing older is left
    assert archive.deleted_before(0) == entries[50][0].decode()
    assert archive.delete_before(0, "99999999999999-0") == 40
    assert archive.oldest(0) is None and archive.read_flat(0, "0-0", 10) == []
    assert [p.suffix for p in (tmp_path / "partition=0").iterdir()] == [".json"]


def test_duckdb_counts_exactly_the_archived_events(log: list[Entry], tmp_path: Path) -> None:
    entries = log[:50]
    archive = Archive.open(str(tmp_path / "archive"))
    publish(archive, entries, 20)
    archive.stage(0, entries[:5])  # a staged, unpublished segment is not counted
    rows = duckdb.sql(
        f"select count(*), count(distinct position), max(partition), min(version) "
        f"from read_parquet('{tmp_path}/archive/**/*.parquet')"
    ).fetchall()
    assert rows == [(50, 50, 0, 1)]
