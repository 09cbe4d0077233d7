"""One project's archived events, found through the aggregate index (for project-filtered
replay): only the row groups that hold the project's aggregates are read, and of each
only the project's rows are made into Python objects."""

from __future__ import annotations

import bisect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from chatlog.eventstore.archive import _segments as seg
from chatlog.eventstore.archive._manifest import SegmentEntry
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


#: Per archive: (path, row group, project prefix) -> that project's rows of the group.
_PROJECT_ROWS: weakref.WeakKeyDictionary[Archive, OrderedDict[tuple[str, int, str], seg.Rows]]
_PROJECT_ROWS = weakref.WeakKeyDictionary()
_CACHED = 16
_lock = threading.Lock()


def _project_rows(archive: Archive, path: str, number: int, prefix: str) -> seg.Rows:
    """The rows of one row group whose aggregate is under ``prefix``, oldest first.

    A row group another reader decoded whole is used as it is. Otherwise the group is
    read (columnar, in C++) and only the project's rows become Python objects: for a
    small project a hit costs the group's read, not 16,384 rows made into objects
    (two thirds of the time); they are kept for the next page of the same reader.
    """
    with archive._lock:
        whole = archive._rows.get((path, number))
    if whole is not None:
        return whole
    key = (path, number, prefix)
    with _lock:
        cache = _PROJECT_ROWS.setdefault(archive, OrderedDict())
        rows = cache.get(key)
        if rows is not None:
            cache.move_to_end(key)
            return rows
    table = archive._parquet(path, seg.DICTIONARY_COLUMNS).read_row_group(
        number, columns=seg.ROW_COLUMNS)
    aggregates = table.column("aggregate").combine_chunks()
    if pa.types.is_dictionary(aggregates.type):  # test the distinct values, then map
        mine = pc.starts_with(aggregates.dictionary, prefix)
        mask = pc.fill_null(pc.take(mine, aggregates.indices), False)
    else:
        mask = pc.fill_null(pc.starts_with(aggregates, prefix), False)
    rows = seg.Rows.of(table.filter(mask))
    with _lock:
        cache[key] = rows
        while len(cache) > _CACHED:
            cache.popitem(last=False)
    return rows


def _rows_in_order(archive: Archive, partition: int, prefix: str,
                   segments: Iterable[SegmentEntry], *, newest_first: bool) -> Iterator[seg.Rows]:
    """The row groups of ``segments`` (in the order given) that may hold ``prefix``'s
    aggregates, each as that project's rows; newest group first when ``newest_first``."""
    groups = _row_groups(archive, partition, prefix)
    for entry in segments:
        path = archive.storage.join(f"partition={partition}", entry.name)
        if groups is None:  # no index: every row group of the segment
            numbers = list(range(archive._file_metadata(path).num_row_groups))
        else:
            numbers = sorted(groups.get(entry.id, ()))
        for number in reversed(numbers) if newest_first else numbers:
            yield _project_rows(archive, path, number, prefix)


def _read(archive: Archive, partition: int, project: str, after: str,
          before: str | None, limit: int) -> list[FlatEntry]:
    key = parse_position(after)
    bound = None if before is None else parse_position(before)
    prefix = f"{project}/"
    segments = [e for e in archive._manifest(partition).segments
                if seg.split_position(e.last) > key
                and (bound is None or seg.split_position(e.first) < bound)]
    wanted = prefix.encode()
    out: list[FlatEntry] = []
    for rows in _rows_in_order(archive, partition, prefix, segments, newest_first=False):
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
    prefix = f"{project}/"
    segments = [e for e in reversed(archive._manifest(partition).segments)
                if bound is None or seg.split_position(e.first) < bound]
    wanted = prefix.encode()
    out: list[FlatEntry] = []
    for rows in _rows_in_order(archive, partition, prefix, segments, newest_first=True):
        stop = len(rows.keys) if bound is None else bisect.bisect_left(rows.keys, bound)
        for i in range(stop - 1, -1, -1):
            if rows.aggregates[i].startswith(wanted):
                out.append(rows.flat(i))
                if len(out) >= limit:
                    return out
    return out
