"""Deliberate deletion of archived history (``Archive.delete_before``): segments
wholly before the position are dropped, one that straddles it is rewritten.

The functions take the :class:`Archive` as ``self`` (typed ``Any``: importing it
here would close an import circle with ``_archive``, which calls them)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chatlog.errors import ArchiveConflict
from chatlog.eventstore.archive import _segments as seg
from chatlog.eventstore.archive._manifest import Manifest, SegmentEntry
from chatlog.eventstore.archive.idfiles import ids_path
from chatlog.eventstore.codec import parse_position


def delete_before(self: Any, partition: int, position: str, *,
                  fence: int | None = None) -> int:
    """Deliberately delete the archived events before ``position``; return how many.

    Segments wholly before it are dropped; a segment that straddles it is
    rewritten without them. The manifest then records ``deleted_before``.
    With ``fence`` (the caller holds the partition's archiver lease, see
    :class:`chatlog.eventstore.archiver.Lease`) it refuses when a newer lease
    published; without, the caller makes sure no archiver runs meanwhile.
    """
    before = parse_position(position)
    with self._lock:
        m = self._read_manifest(partition)
        fence = m.admit(fence, "owns this archive")
        removed = 0
        kept: list[SegmentEntry] = []
        dropped: list[str] = []
        ids_gone: list[str] = []  # the id files of the segments dropped whole
        added: list[pa.Table] = []
        next_id = m.next_segment
        for entry in m.segments:
            if seg.split_position(entry.last) < before:
                removed += entry.count
                dropped.append(entry.name)
                ids_gone.append(ids_path(self.storage, partition, entry.last))
            elif seg.split_position(entry.first) < before:
                new_entry, rows = _rewrite_after(self, partition, entry, before, next_id,
                                                      fence)
                next_id += 1
                removed += entry.count - new_entry.count
                dropped.append(entry.name)
                kept.append(new_entry)
                added.append(rows)
            else:
                kept.append(entry)
        if m.deleted_before is None or parse_position(m.deleted_before) < before:
            deleted_before: str | None = position
        else:
            deleted_before = m.deleted_before
        replace_segments(self, m, kept, added, next_segment=next_id,
                         fence=max(m.fence, fence), deleted_before=deleted_before)
        for name in dropped:
            self.storage.remove(self.storage.join(f"partition={partition}", name))
        for path in ids_gone:
            self.storage.remove(path)
        return removed

def _rewrite_after(
    self: Any, partition: int, entry: SegmentEntry, before: tuple[int, int], new_id: int,
    fence: int,
) -> tuple[SegmentEntry, pa.Table]:
    path = self.storage.join(f"partition={partition}", entry.name)
    meta = self._file_metadata(path)
    rows_per_group = meta.row_group(0).num_rows if meta.num_row_groups else 1
    rows_per_group = max(rows_per_group, 1)
    table = pq.read_table(self.storage.open(path)).replace_schema_metadata(None)
    table = table.filter(pc.invert(seg.before_mask(table, before)))
    checksum = seg.checksum_of(table)
    first = str(table.column("position")[0])
    name = f"{first}_{entry.last}.parquet"
    tmp = self.storage.join(f"partition={partition}", f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    with self.storage.create(tmp) as f:
        seg.write(table, f, {"partition": str(partition), "first": first,
                             "last": entry.last, "count": str(table.num_rows),
                             "checksum": checksum}, rows_per_group)
    self._verify(tmp, table.num_rows, checksum)
    size = self.storage.size(tmp)
    self.storage.rename(tmp, self.storage.join(f"partition={partition}", name))
    new_entry = SegmentEntry(
        id=new_id, name=name, first=first, last=entry.last, count=table.num_rows,
        bytes=size, checksum=checksum, fence=fence, created=time.time(),
    )
    return new_entry, seg.aggregate_rows(table, new_id, rows_per_group)


def replace_segments(self: Any, m: Manifest, kept: list[SegmentEntry], added: list[pa.Table],
                     *, next_segment: int, fence: int,
                     deleted_before: str | None) -> Manifest:
    """Publish the next manifest of ``m``'s partition with ``kept`` segments: their
    rows of the aggregate index (one run again, plus the ``added`` rows of rewritten
    segments), committed atomically. Deletion and erasure both end this way.

    Refuses (:class:`ArchiveConflict`) when the manifest is no longer ``m``: an
    archiver published meanwhile, whose segment the new manifest would drop. The
    callers hold the partition's archiver lease, so only a holder whose lease had
    lapsed can get there."""
    partition = m.partition
    now = self._read_manifest(partition)
    if now.generation != m.generation:  # someone published since m was read: not ours to drop
        raise ArchiveConflict(
            f"partition {partition}: the archive changed (generation {m.generation} -> "
            f"{now.generation}) while it was rewritten; nothing was replaced"
        )
    live = pa.array([e.id for e in kept], pa.int32())
    parts = [run.filter(pc.is_in(run.column("segment"), live))
             for run in self._index_runs(partition)]
    index = pa.concat_tables([*parts, *added]) if parts or added else None
    runs = []
    if index is not None and index.num_rows:  # rare: one run again
        runs.append(self._write_run(partition, f"aggregates-{m.generation + 1}.arrow", index))
    new = Manifest(
        partition=partition, generation=m.generation + 1, fence=fence,
        next_segment=next_segment, deleted_before=deleted_before, indexes=runs,
        segments=kept,
    )
    self._commit(new, old=m)
    return new

