"""One project's archived events, found through the aggregate index (for project-filtered
replay): only the row groups that hold the project's aggregates are read."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from chatlog.eventstore.archive import _segments as seg
from chatlog.eventstore.codec import parse_position

if TYPE_CHECKING:
    from chatlog.eventstore.archive._archive import Archive

FlatEntry = tuple[bytes, list[bytes]]


def read_project(archive: Archive, partition: int, project: str, after: str,
                 before: str | None, limit: int) -> list[FlatEntry]:
    """The archived events of ``project`` after position ``after`` and before ``before``
    (None: no bound), oldest first, at most ``limit``, in the shape of
    :meth:`Archive.read_flat`.

    The aggregate index names the (segment, row group) pairs that hold the project's
    aggregates; only those row groups are read, so the cost follows the project's
    events (at the granularity of a row group), not the partition's.
    """
    if limit <= 0:
        return []
    try:
        return _read(archive, partition, project, after, before, limit)
    except FileNotFoundError:  # a deletion or erasure rewrote a segment meanwhile
        archive.reload()
        return _read(archive, partition, project, after, before, limit)


def _row_groups(archive: Archive, partition: int, prefix: str) -> dict[int, set[int]] | None:
    """Per segment id, the row groups the aggregate index says hold an aggregate under
    ``prefix`` (None: the partition has no index; every row group must be read)."""
    if not archive._manifest(partition).indexes:
        return None
    index = pa.concat_tables(archive._index_runs(partition))
    hits = index.filter(pc.starts_with(index.column("aggregate"), prefix))
    groups: dict[int, set[int]] = {}
    for segment, group in zip(hits.column("segment").to_pylist(),
                              hits.column("row_group").to_pylist(), strict=True):
        groups.setdefault(int(segment), set()).add(int(group))
    return groups


def _read(archive: Archive, partition: int, project: str, after: str,
          before: str | None, limit: int) -> list[FlatEntry]:
    key = parse_position(after)
    bound = None if before is None else parse_position(before)
    m = archive._manifest(partition)
    prefix = f"{project}/"
    groups = _row_groups(archive, partition, prefix)
    wanted = prefix.encode()
    out: list[FlatEntry] = []
    for entry in m.segments:
        if seg.split_position(entry.last) <= key:
            continue
        if bound is not None and seg.split_position(entry.first) >= bound:
            break
        path = archive.storage.join(f"partition={partition}", entry.name)
        if groups is None:  # no index: every row group of the segment
            numbers = list(range(archive._file_metadata(path).num_row_groups))
        else:
            numbers = sorted(groups.get(entry.id, ()))
        for number in numbers:
            rows = archive._row_group(path, number)
            for i in range(bisect.bisect_right(rows.keys, key), len(rows.keys)):
                if bound is not None and rows.keys[i] >= bound:
                    return out
                if rows.aggregates[i].startswith(wanted):
                    out.append(rows.flat(i))
                    if len(out) >= limit:
                        return out
    return out


def read_project_before(archive: Archive, partition: int, project: str, before: str | None,
                        limit: int) -> list[FlatEntry]:
    """The archived events of ``project`` before position ``before`` (None: from the
    newest), newest first, at most ``limit``; the row groups read as
    :func:`read_project` reads them, newest first."""
    if limit <= 0:
        return []
    try:
        return _read_before(archive, partition, project, before, limit)
    except FileNotFoundError:
        archive.reload()
        return _read_before(archive, partition, project, before, limit)


def _read_before(archive: Archive, partition: int, project: str, before: str | None,
                 limit: int) -> list[FlatEntry]:
    bound = None if before is None else parse_position(before)
    m = archive._manifest(partition)
    prefix = f"{project}/"
    groups = _row_groups(archive, partition, prefix)
    wanted = prefix.encode()
    out: list[FlatEntry] = []
    for entry in reversed(m.segments):
        if bound is not None and seg.split_position(entry.first) >= bound:
            continue
        path = archive.storage.join(f"partition={partition}", entry.name)
        if groups is None:
            numbers = list(range(archive._file_metadata(path).num_row_groups))
        else:
            numbers = sorted(groups.get(entry.id, ()))
        for number in reversed(numbers):
            rows = archive._row_group(path, number)
            stop = len(rows.keys) if bound is None else bisect.bisect_left(rows.keys, bound)
            for i in range(stop - 1, -1, -1):
                if rows.aggregates[i].startswith(wanted):
                    out.append(rows.flat(i))
                    if len(out) >= limit:
                        return out
    return out
