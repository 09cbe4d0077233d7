"""Erasure in the archive: segments rewritten without one project's or one thread's rows.

A segment holding erased rows is rewritten (staged under a temporary name,
verified, renamed to a new name), the manifest and the aggregate index are
replaced atomically, and only then is the old file removed. A segment left
with no rows is dropped. Running it again after a crash finds nothing left to
erase in the segments already rewritten: it is idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chatlog.eventstore.archive import _segments as seg
from chatlog.eventstore.archive._delete import replace_segments
from chatlog.eventstore.archive._manifest import Manifest, SegmentEntry
from chatlog.eventstore.waits import erase_from_snapshot

if TYPE_CHECKING:
    from chatlog.eventstore.archive._archive import Archive


@dataclass(frozen=True, slots=True)
class ArchiveErasure:
    """What an erasure removed from one partition's archive."""

    events: int = 0
    segments_rewritten: int = 0
    segments_dropped: int = 0
    #: Bytes of the segments written anew.
    bytes_rewritten: int = 0


def _mask(table: pa.Table, project: str, aggregate: str | None, before: str,
          prefix: str | None) -> pa.Array:
    if prefix is not None:
        scope = pc.starts_with(table.column("aggregate"), prefix)
    elif aggregate is None:
        scope = pc.and_(pc.equal(table.column("project"), project),
                        pc.invert(pc.starts_with(table.column("aggregate"),
                                                 f"{project}/erasure/")))
    else:
        scope = pc.equal(table.column("aggregate"), aggregate)
    return pc.and_(scope, seg.before_mask(table, seg.split_position(before)))


def erase_rows(archive: Archive, partition: int, project: str, aggregate: str | None,
               before: str, prefix: str | None = None, *,
               fence: int | None = None) -> ArchiveErasure:
    """Remove the rows of ``project`` (or of its ``aggregate`` only, or of the
    aggregates under ``prefix``) before position ``before`` from ``partition``'s
    segments.

    The caller holds the partition's archiver lease (so no archiver publishes or
    removes files meanwhile) and passes its fencing token as ``fence``: refused
    when a newer lease published, and recorded so an older holder's late publish
    is refused in turn (as :meth:`Archive.delete_before`).
    """
    storage = archive.storage
    with archive._lock:
        m = archive._read_manifest(partition)
        fence = m.admit(fence, "owns this archive; the erasure did not rewrite it")
        if not m.segments:
            return ArchiveErasure()
        erased = rewritten = dropped_n = written = 0
        kept: list[SegmentEntry] = []
        dropped: list[str] = []
        changed: set[int] = set()
        added: list[pa.Table] = []
        next_id = m.next_segment
        holding = _segments_holding(archive, partition, m, project, aggregate, prefix)
        for entry in m.segments:
            if holding is not None and entry.id not in holding:
                kept.append(entry)
                continue
            path = storage.join(f"partition={partition}", entry.name)
            # in the caller's thread (pyarrow's pool would run it at the pool's priority)
            table = pq.read_table(storage.open(path), use_threads=False)
            table = table.replace_schema_metadata(None)
            mask = _mask(table, project, aggregate, before, prefix)
            hits = int(pc.sum(mask).as_py() or 0)
            if not hits:
                kept.append(entry)
                continue
            erased += hits
            dropped.append(entry.name)
            changed.add(entry.id)
            rest = table.filter(pc.invert(mask))
            if rest.num_rows == 0:
                dropped_n += 1
                continue
            meta = archive._file_metadata(path)
            per_group = max(meta.row_group(0).num_rows if meta.num_row_groups else 1, 1)
            checksum = seg.checksum_of(rest)
            first = str(rest.column("position")[0])
            last = str(rest.column("position")[-1])
            name = f"{first}_{last}.e{uuid.uuid4().hex[:8]}.parquet"
            tmp = storage.join(f"partition={partition}", f".{name}.tmp")
            with storage.create(tmp) as f:
                seg.write(rest, f, {"partition": str(partition), "first": first, "last": last,
                                    "count": str(rest.num_rows), "checksum": checksum},
                          per_group)
            archive._verify(tmp, rest.num_rows, checksum)
            size = storage.size(tmp)
            storage.rename(tmp, storage.join(f"partition={partition}", name))
            rewritten += 1
            written += size
            new_entry = SegmentEntry(
                id=next_id, name=name, first=first, last=last, count=rest.num_rows,
                bytes=size, checksum=checksum, fence=entry.fence, created=entry.created,
            )
            added.append(seg.aggregate_rows(rest, next_id, per_group))
            next_id += 1
            kept.append(new_entry)
        if not dropped:
            _remove_unlisted(archive, partition, m)
            return ArchiveErasure()
        new = replace_segments(archive, m, kept, added, next_segment=next_id, fence=fence,
                               deleted_before=m.deleted_before)
        erase_from_snapshot(archive, partition, project, aggregate, prefix)
        for name in dropped:
            storage.remove(storage.join(f"partition={partition}", name))
        _remove_unlisted(archive, partition, new)
        archive._metadata.clear()
        archive._rows.clear()
        return ArchiveErasure(events=erased, segments_rewritten=rewritten,
                              segments_dropped=dropped_n, bytes_rewritten=written)


def _segments_holding(archive: Archive, partition: int, m: Manifest, project: str,
                      aggregate: str | None, prefix: str | None) -> set[int] | None:
    """The ids of the segments the aggregate index says hold the scope (None: no index,
    every segment must be read)."""
    runs = archive._index_runs(partition) if m.indexes else []
    if not runs:
        return None
    index = pa.concat_tables(runs)
    column = index.column("aggregate")
    if aggregate is not None:
        hit = pc.equal(column, aggregate)
    else:
        hit = pc.starts_with(column, prefix if prefix is not None else f"{project}/")
    return {int(s) for s in index.filter(hit).column("segment").to_pylist()}


def _remove_unlisted(archive: Archive, partition: int, m: Manifest) -> None:
    """Remove segment files the manifest does not list: an old segment whose
    replacement was published just before a crash still holds erased rows."""
    storage = archive.storage
    listed = {e.name for e in m.segments}
    for name in storage.listdir(archive.partition_dir(partition)):
        if name.endswith(".parquet") and name not in listed:
            storage.remove(storage.join(f"partition={partition}", name))
