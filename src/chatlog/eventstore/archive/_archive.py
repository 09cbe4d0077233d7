"""The archive: sealed, immutable Parquet segments of each partition's old events.

Layout under the archive URL (one directory per partition, Hive style, so
``read_parquet('archive/**/*.parquet')`` reads every event and a ``partition``
column)::

    partition=0/manifest.json                 the published segments (replaced atomically)
    partition=0/aggregates-<generation>.arrow aggregate -> (segment, row group, versions)
    partition=0/<first>_<last>.parquet        one segment: events first..last

Readers see a segment once its manifest entry is durable. Writers (the
archiver of a partition, holding its lease) stage a segment under a temporary
name, verify it, then publish it: rename, index, manifest.

The API is synchronous file I/O; async callers wrap it in ``asyncio.to_thread``.
It is safe to call from several threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatlog.errors import ArchiveConflict, ArchiveCorrupt, InvalidInput
from chatlog.eventstore.archive._fs import Storage, storage_for
from chatlog.eventstore.archive._lazy import LazyModule
from chatlog.eventstore.archive._manifest import (
    MANIFEST,
    IndexRun,
    Manifest,
    SegmentEntry,
    SegmentInfo,
)
from chatlog.eventstore.codec import START, parse_position
from chatlog.tuning import gc_paused

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from chatlog.eventstore.archive import _segments as seg
else:  # imported when a segment is first read or written (see _lazy.py)
    pa = LazyModule("pyarrow")
    pc = LazyModule("pyarrow.compute")
    pq = LazyModule("pyarrow.parquet")
    seg = LazyModule("chatlog.eventstore.archive._segments")

#: Called with the name of each step a write reached (the archiver's fault hook).
StepHook = Callable[[str], None]
#: Decoded row groups kept for reads that page through a segment.
_ROWS_CACHED = 16
#: Rows per batch of :meth:`Archive.iter_batches`: one row group (bigger batches cost the
#: rebuild ~90 MB more peak RSS, measured at 1M events, and no speed). ``None``: read as
#: ``seg.ROW_GROUP_ROWS`` on first use (this module loads without pyarrow).
_BATCH_ROWS: int | None = None


@dataclass(slots=True)
class StagedSegment:
    """A segment written and verified under a temporary name, not yet visible."""

    partition: int
    name: str
    tmp_path: str
    first: str
    last: str
    count: int
    bytes: int
    checksum: str
    index_rows: pa.Table


class Archive:
    """The archive at one URL: a local directory, ``file://`` or an fsspec URL."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.url = storage.url
        self._lock = threading.RLock()
        self._manifests: dict[int, Manifest] = {}
        #: Index runs read so far, by partition and file name (they never change).
        self._runs: dict[tuple[int, str], pa.Table] = {}
        self._metadata: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._rows: OrderedDict[tuple[str, int], seg.Rows] = OrderedDict()

    @classmethod
    def open(cls, url: str) -> Archive:
        """Open (or create) the archive at ``url``: a local path, ``file://`` or fsspec URL."""
        return cls(storage_for(url))

    # -- the manifest --------------------------------------------------------------------

    def partition_dir(self, partition: int) -> str:
        return self.storage.join(f"partition={partition}")

    def partitions(self) -> list[int]:
        """The partitions that have an archive directory."""
        out = []
        for name in self.storage.listdir(self.storage.root):
            if name.startswith("partition=") and name[10:].isdigit():
                out.append(int(name[10:]))
        return sorted(out)

    def reload(self) -> None:
        """Forget the cached manifests: the next call re-reads them (others may have published)."""
        with self._lock:
            self._manifests.clear()

    def _read_manifest(self, partition: int) -> Manifest:
        path = self.storage.join(f"partition={partition}", MANIFEST)
        try:
            data = self.storage.read_bytes(path)
        except FileNotFoundError:
            return Manifest(partition=partition)
        return Manifest.loads(data, path)

    def _manifest(self, partition: int) -> Manifest:
        with self._lock:
            m = self._manifests.get(partition)
            if m is None:
                m = self._manifests[partition] = self._read_manifest(partition)
            return m

    def _info(self, partition: int, entry: SegmentEntry) -> SegmentInfo:
        return SegmentInfo(
            partition=partition, first=entry.first, last=entry.last, count=entry.count,
            bytes=entry.bytes, path=self.storage.join(f"partition={partition}", entry.name),
            checksum=entry.checksum, id=entry.id,
        )

    def segments(self, partition: int) -> list[SegmentInfo]:
        """The partition's published segments, oldest first."""
        return [self._info(partition, e) for e in self._manifest(partition).segments]

    def oldest(self, partition: int) -> str | None:
        """The first archived position kept (None: nothing archived)."""
        segments = self._manifest(partition).segments
        return segments[0].first if segments else None

    def newest(self, partition: int) -> str | None:
        """The last archived position (None: nothing archived)."""
        segments = self._manifest(partition).segments
        return segments[-1].last if segments else None

    def deleted_before(self, partition: int) -> str | None:
        """The position a deliberate deletion removed everything before (None: none)."""
        return self._manifest(partition).deleted_before

    def count(self, partition: int) -> int:
        return sum(e.count for e in self._manifest(partition).segments)

    # -- reading -------------------------------------------------------------------------

    def _file_metadata(self, path: str) -> pq.FileMetaData:
        with self._lock:
            meta = self._metadata.get(path)
            if meta is not None:
                self._metadata.move_to_end(path)
                return meta
        meta = pq.ParquetFile(self.storage.open(path)).metadata
        with self._lock:
            self._metadata[path] = meta
            while len(self._metadata) > 256:
                self._metadata.popitem(last=False)
        return meta

    def _parquet(self, path: str, dictionary: list[str] | None = None) -> pq.ParquetFile:
        meta = self._file_metadata(path)
        source = self.storage.open(path)
        return pq.ParquetFile(source, metadata=meta, memory_map=isinstance(source, str),
                              read_dictionary=dictionary)

    def _decoded(self, path: str, group: int) -> seg.Rows | None:
        """The row group if it is in the cache (None: it is not)."""
        with self._lock:
            rows = self._rows.get((path, group))
            if rows is not None:
                self._rows.move_to_end((path, group))
            return rows

    def _row_group(self, path: str, group: int) -> seg.Rows:
        rows = self._decoded(path, group)
        if rows is not None:
            return rows
        rows = seg.Rows.of(self._parquet(path, seg.DICTIONARY_COLUMNS).read_row_group(
            group, columns=seg.ROW_COLUMNS))
        with self._lock:
            self._rows[path, group] = rows
            while len(self._rows) > _ROWS_CACHED:
                self._rows.popitem(last=False)
        return rows

    def read_flat(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[tuple[bytes, list[bytes]]]:
        """Archived events after position ``after``, oldest first, at most ``limit``, each
        as ``(position, [b"i", id, b"t", type, b"a", aggregate, b"v", version, b"b", body])``
        (the shape of ``EventStore.read_flat``). Opens only the segments and row groups
        that can hold positions after ``after``."""
        return self._read_paused(partition, after, limit, decode=True) or []  # never None

    def read_flat_decoded(
        self, partition: int, after: str = START, limit: int = 1000
    ) -> list[tuple[bytes, list[bytes]]] | None:
        """:meth:`read_flat` from row groups already decoded (no file read: cheap enough
        to run on an event loop); None when it would have to read one."""
        return self._read_paused(partition, after, limit, decode=False)

    def _read_paused(self, partition: int, after: str, limit: int,
                     decode: bool) -> list[tuple[bytes, list[bytes]]] | None:
        key = parse_position(after)
        if limit <= 0:
            return []
        # A page is thousands of tuples and lists, none in a cycle: the collections their
        # allocation would trigger cost a third of the read (measured), most of it
        # traversing the process's long-lived objects. Paused, as rebuild does.
        with gc_paused():
            try:
                return self._read_flat(partition, key, limit, decode)
            except FileNotFoundError:  # a deletion rewrote a segment since the manifest
                self.reload()          # was read
                return self._read_flat(partition, key, limit, decode) if decode else None

    def _read_flat(self, partition: int, key: tuple[int, int], limit: int,
                   decode: bool) -> list[tuple[bytes, list[bytes]]] | None:
        out: list[tuple[bytes, list[bytes]]] = []
        for entry in self._manifest(partition).segments:
            if seg.split_position(entry.last) <= key:
                continue
            path = self.storage.join(f"partition={partition}", entry.name)
            meta = self._file_metadata(path)
            for group in range(meta.num_row_groups):
                most = seg.row_group_max_ms(meta, group)
                if most is not None and most < key[0]:
                    continue
                rows = self._row_group(path, group) if decode else self._decoded(path, group)
                if rows is None:
                    return None
                start = rows.index_after(key)
                stop = min(len(rows), start + limit - len(out))
                out.extend(rows.flats(start, stop))
                if len(out) >= limit:
                    return out
        return out

    def read_aggregate(
        self, partition: int, aggregate: str, from_version: int = 1, limit: int | None = None
    ) -> list[tuple[bytes, list[bytes]]]:
        """One aggregate's archived events from ``from_version`` on, in version order, found
        through the aggregate index (only the row groups that hold them are read)."""
        if limit is not None and limit <= 0:
            return []
        try:
            tables = self._index_runs(partition)
        except FileNotFoundError:  # merged away since this manifest was read
            self.reload()
            tables = self._index_runs(partition)
        runs = [run.filter(pc.equal(run.column("aggregate"), aggregate)) for run in tables]
        if not runs:
            return []
        hits = pa.concat_tables(runs)
        if from_version > 1:
            hits = hits.filter(pc.greater_equal(hits.column("last_version"), from_version))
        if hits.num_rows == 0:
            return []
        names = {e.id: e.name for e in self._manifest(partition).segments}
        places = sorted(zip(hits.column("first_version").to_pylist(),
                            hits.column("segment").to_pylist(),
                            hits.column("row_group").to_pylist(), strict=True))
        wanted = aggregate.encode()
        found: dict[bytes, tuple[int, tuple[bytes, list[bytes]]]] = {}
        for _, segment_id, group in places:
            name = names.get(segment_id)
            if name is None:  # deleted since the index was read
                continue
            rows = self._row_group(self.storage.join(f"partition={partition}", name), group)
            for i, agg in enumerate(rows.aggregates):
                if agg == wanted and rows.versions[i] >= from_version:
                    found[rows.positions[i]] = (rows.versions[i], rows.flat(i))
            if limit is not None and len(found) >= limit:
                break
        events = [flat for _, flat in sorted(found.values(), key=lambda vf: vf[0])]
        return events if limit is None else events[:limit]

    def iter_batches(self, partition: int, after: str = START) -> Iterator[pa.RecordBatch]:
        """The archived events after ``after`` as columnar batches, oldest first (for
        rebuilds): columns position, event_id, aggregate, version, type, time, body."""
        key = parse_position(after)
        for entry in self._manifest(partition).segments:
            if seg.split_position(entry.last) <= key:
                continue
            path = self.storage.join(f"partition={partition}", entry.name)
            f = self._parquet(path)
            batch_rows = _BATCH_ROWS or seg.ROW_GROUP_ROWS
            if seg.split_position(entry.first) > key:
                yield from f.iter_batches(batch_size=batch_rows, columns=seg.BATCH_COLUMNS)
                continue
            groups = [g for g in range(f.metadata.num_row_groups)
                      if (seg.row_group_max_ms(f.metadata, g) or key[0]) >= key[0]]
            columns = [*seg.BATCH_COLUMNS, "position_ms", "position_seq"]
            for batch in f.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
                kept = batch.filter(seg.after_mask(batch, key)).select(seg.BATCH_COLUMNS)
                if kept.num_rows:
                    yield kept

    def _index_runs(self, partition: int) -> list[pa.Table]:
        """The partition's aggregate index runs (cached: a run's file never changes)."""
        m = self._manifest(partition)
        tables = []
        for run in m.indexes:
            with self._lock:
                table = self._runs.get((partition, run.name))
            if table is None:
                table = self._read_run(partition, run.name)
                with self._lock:
                    live = {(partition, r.name) for r in m.indexes}
                    for key in [k for k in self._runs if k[0] == partition and k not in live]:
                        del self._runs[key]
                    self._runs[(partition, run.name)] = table
            tables.append(table)
        return tables

    def _read_run(self, partition: int, name: str) -> pa.Table:
        path = self.storage.join(f"partition={partition}", name)
        source = self.storage.open(path)
        if isinstance(source, str):
            return pa.ipc.open_file(pa.memory_map(source)).read_all()
        return pa.ipc.open_file(pa.BufferReader(self.storage.read_bytes(path))).read_all()

    def _write_run(self, partition: int, name: str, table: pa.Table) -> IndexRun:
        with self.storage.create(self.storage.join(f"partition={partition}", name)) as f:
            with pa.ipc.new_file(f, seg.INDEX_SCHEMA) as writer:
                writer.write_table(table.combine_chunks())
        self._runs[(partition, name)] = table
        return IndexRun(name=name, rows=table.num_rows)

    def _add_run(self, m: Manifest, generation: int, rows: pa.Table) -> list[IndexRun]:
        """``m``'s index runs with ``rows`` added, merged with the newest runs while the
        older is at most twice the size of what it joins (a binary counter: about
        log2(segments) runs, each row rewritten about log2(segments) times). Writes
        one file, the new run."""
        partition = m.partition
        runs = list(m.indexes)
        tables = self._index_runs(partition) if runs else []
        while runs and runs[-1].rows <= 2 * rows.num_rows:
            runs.pop()
            rows = pa.concat_tables([tables.pop(), rows])
        runs.append(self._write_run(partition, f"aggregates-{generation}.arrow", rows))
        return runs

    # -- writing (the archiver of the partition, holding its lease) ----------------------

    def stage(
        self,
        partition: int,
        entries: Sequence[tuple[bytes, Sequence[bytes]]],
        *,
        on_step: StepHook | None = None,
        row_group_rows: int | None = None,
    ) -> StagedSegment:
        """Write ``entries`` (consecutive, position order) as a segment under a temporary
        name, fsync it, read it back and check its count and checksum. Nothing is
        visible to readers until :meth:`publish`."""
        if not entries:
            raise InvalidInput("a segment needs at least one event")
        if row_group_rows is None:
            row_group_rows = seg.ROW_GROUP_ROWS
        table = seg.table_of(entries)
        checksum = seg.checksum_of(table)
        first = str(table.column("position")[0])
        last = str(table.column("position")[-1])
        directory = self.partition_dir(partition)
        self.storage.makedirs(directory)
        name = f"{first}_{last}.parquet"
        tmp = self.storage.join(f"partition={partition}", f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        metadata = {"partition": str(partition), "first": first, "last": last,
                    "count": str(table.num_rows), "checksum": checksum}
        with self.storage.create(tmp) as f:
            seg.write(table, f, metadata, row_group_rows)
        if on_step:
            on_step("written")
        self._verify(tmp, table.num_rows, checksum)
        if on_step:
            on_step("verified")
        return StagedSegment(
            partition=partition, name=name, tmp_path=tmp, first=first, last=last,
            count=table.num_rows, bytes=self.storage.size(tmp), checksum=checksum,
            index_rows=seg.aggregate_rows(table, 0, row_group_rows),
        )

    def _verify(self, path: str, count: int, checksum: str) -> None:
        back = pq.read_table(self.storage.open(path))
        got = seg.checksum_of(back) if back.num_rows == count else "?"
        if back.num_rows != count or got != checksum:
            self.storage.remove(path)
            raise ArchiveCorrupt(
                f"segment {path} read back {back.num_rows} events (checksum {got}); "
                f"wrote {count} (checksum {checksum}); it was removed"
            )

    def discard(self, staged: StagedSegment) -> None:
        """Remove a staged segment that will not be published."""
        self.storage.remove(staged.tmp_path)

    def publish(
        self, staged: StagedSegment, *, fence: int = 0, on_step: StepHook | None = None
    ) -> SegmentInfo:
        """Make a staged segment part of the archive: rename it into place, add its
        aggregates to the index and its entry to the manifest, each durably.

        Raises :class:`ArchiveConflict` (and discards it) when it does not start after
        the newest published segment, or when a larger fencing token published here.
        """
        partition = staged.partition
        with self._lock:
            m = self._read_manifest(partition)
            try:
                m.admit(fence, "published; this segment was not")
            except ArchiveConflict:
                self.discard(staged)
                raise
            if m.segments and parse_position(staged.first) <= parse_position(m.segments[-1].last):
                self.discard(staged)
                raise ArchiveConflict(
                    f"partition {partition}: segment {staged.first}..{staged.last} overlaps the "
                    f"archive, which already ends at {m.segments[-1].last}"
                )
            self.storage.rename(staged.tmp_path, self.storage.join(
                f"partition={partition}", staged.name))
            if on_step:
                on_step("renamed")
            entry = SegmentEntry(
                id=m.next_segment, name=staged.name, first=staged.first, last=staged.last,
                count=staged.count, bytes=staged.bytes, checksum=staged.checksum, fence=fence,
                created=time.time(),
            )
            rows = staged.index_rows.set_column(
                1, "segment", pa.array([entry.id] * staged.index_rows.num_rows, pa.int32()))
            new = Manifest(
                partition=partition, generation=m.generation + 1, fence=max(m.fence, fence),
                next_segment=m.next_segment + 1, deleted_before=m.deleted_before,
                indexes=self._add_run(m, m.generation + 1, rows),
                segments=[*m.segments, entry],
            )
            self._commit(new, old=m)
            if on_step:
                on_step("published")
            return self._info(partition, entry)

    def _commit(self, new: Manifest, old: Manifest) -> None:
        """Write the manifest durably (its index runs are written already); then remove
        the index runs the old one had and the new one has not."""
        partition = new.partition
        self.storage.replace_bytes(
            self.storage.join(f"partition={partition}", MANIFEST), new.dumps())
        self._manifests[partition] = new
        kept = {r.name for r in new.indexes}
        for run in old.indexes:
            if run.name not in kept:
                self.storage.remove(self.storage.join(f"partition={partition}", run.name))
                self._runs.pop((partition, run.name), None)

    def remove_orphans(self, partition: int) -> int:
        """Remove files of the partition that no manifest refers to (left by a crash
        between a rename and its manifest entry, or by a staged segment never
        published); return how many. Only the partition's archiver calls this."""
        with self._lock:
            m = self._read_manifest(partition)
            self._manifests[partition] = m
            keep = {e.name for e in m.segments} | {r.name for r in m.indexes} | {MANIFEST}
            removed = 0
            for name in self.storage.listdir(self.partition_dir(partition)):
                if name not in keep:
                    self.storage.remove(self.storage.join(f"partition={partition}", name))
                    removed += 1
            return removed

    def delete_before(self, partition: int, position: str, *, fence: int | None = None) -> int:
        """Deliberately delete the archived events before ``position``; return how many.

        Segments wholly before it are dropped; a segment that straddles it is
        rewritten without them. The manifest then records ``deleted_before``.
        With ``fence`` (the caller holds the partition's archiver lease, see
        :class:`chatlog.eventstore.archiver.Lease`) it refuses when a newer lease
        published; without, the caller makes sure no archiver runs meanwhile.
        """
        from chatlog.eventstore.archive._delete import delete_before

        return delete_before(self, partition, position, fence=fence)
