"""One segment: a Parquet file (zstd) of consecutive events of one partition.

Columns (documented in docs/archive.md):

=============  =====================  ==================================================
position       string                 the stream position ``<ms>-<seq>``
position_ms    int64                  its millisecond part (row-group statistics)
position_seq   int64                  its sequence part
event_id       string                 the event's UUID
project        string                 the project key (UUID), first part of ``aggregate``
aggregate      string                 ``<project>/<aggregate type>/<aggregate id>``
version        int64                  the event's version within its aggregate
type           string                 the event type (``MessageAppended``...)
time           timestamp[ms, UTC]     when it was appended (the position's ms)
body           binary                 JSON: ``n`` project name, ``d`` data, ``s`` schema
=============  =====================  ==================================================
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chatlog.eventstore.archive._manifest import FORMAT
from chatlog.eventstore.codec import flat_field

#: Rows per row group: what a read from a cursor decodes at least.
ROW_GROUP_ROWS = 16_384

SCHEMA = pa.schema(
    [
        ("position", pa.string()),
        ("position_ms", pa.int64()),
        ("position_seq", pa.int64()),
        ("event_id", pa.string()),
        ("project", pa.string()),
        ("aggregate", pa.string()),
        ("version", pa.int64()),
        ("type", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("body", pa.binary()),
    ]
)
#: The columns :meth:`Archive.iter_batches` yields, in this order.
BATCH_COLUMNS = ["position", "event_id", "aggregate", "version", "type", "time", "body"]
#: The columns the content checksum covers (everything else derives from them).
_CHECKED = ["position", "event_id", "aggregate", "version", "type", "body"]
_STATS = ["position_ms", "position_seq", "version", "time", "type", "project"]


def split_position(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


_LAYOUT = (b"i", b"t", b"a", b"v", b"b")


def table_of(entries: Sequence[tuple[bytes, Sequence[bytes]]]) -> pa.Table:
    """Stream entries (``(position, flat fields)``, as ``read_flat`` gives them) as a table."""
    flats = [flat for _, flat in entries]
    if all(len(f) == 10 and (f[0], f[2], f[4], f[6], f[8]) == _LAYOUT for f in flats):
        ids, types, aggregates, versions, bodies = (
            [f[k] for f in flats] for k in (1, 3, 5, 7, 9))
    else:  # fields in another order: look each up
        ids, types, aggregates, versions, bodies = (
            [flat_field(f, name) for f in flats] for name in _LAYOUT)
    positions = pa.array(
        [p if isinstance(p, bytes) else str(p).encode() for p, _ in entries], pa.binary()
    ).cast(pa.string())
    parts = pc.split_pattern(positions, "-", max_splits=1)
    ms = pc.list_element(parts, 0).cast(pa.int64())
    aggregate = pa.array(aggregates, pa.binary()).cast(pa.string())
    return pa.table(
        {
            "position": positions,
            "position_ms": ms,
            "position_seq": pc.list_element(parts, 1).cast(pa.int64()),
            "event_id": pa.array(ids, pa.binary()).cast(pa.string()),
            "project": pc.list_element(pc.split_pattern(aggregate, "/", max_splits=1), 0),
            "aggregate": aggregate,
            "version": pa.array(versions, pa.binary()).cast(pa.string()).cast(pa.int64()),
            "type": pa.array(types, pa.binary()).cast(pa.string()),
            "time": ms.cast(pa.timestamp("ms", tz="UTC")),
            "body": pa.array(bodies, pa.binary()),
        },
        schema=SCHEMA,
    )


def checksum_of(table: pa.Table) -> str:
    """A digest of the events' content, independent of how Parquet encoded or chunked it:
    per column, every value's length, then all values' bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(table.num_rows).encode())
    for name in _CHECKED:
        column = table.column(name)
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        h.update(b"\x01" + name.encode())
        if array.null_count:
            raise ValueError(f"column {name} has nulls")
        n = len(array)
        if pa.types.is_integer(array.type):
            width = array.type.bit_width // 8
            values = memoryview(array.buffers()[1])
            h.update(values[array.offset * width : (array.offset + n) * width])
            continue
        if pa.types.is_string(array.type):
            array = array.cast(pa.binary())
        lengths = pc.binary_length(array)
        h.update(memoryview(lengths.buffers()[1])[lengths.offset * 4:(lengths.offset + n) * 4])
        offsets = memoryview(array.buffers()[1]).cast("i")
        data = array.buffers()[2]
        if data is not None and n:
            h.update(memoryview(data)[offsets[array.offset]:offsets[array.offset + n]])
    return "blake2b:" + h.hexdigest()


def write(table: pa.Table, sink: Any, metadata: dict[str, str],
          row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write ``table`` as one Parquet segment to ``sink`` (a path or a binary file)."""
    table = table.replace_schema_metadata({"chatlog": FORMAT, **metadata})
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_rows,
        compression="zstd",
        use_dictionary=["type", "project", "aggregate"],
        write_statistics=_STATS,
        sorting_columns=[pq.SortingColumn(1), pq.SortingColumn(2)],
    )


def row_group_max_ms(meta: pq.FileMetaData, group: int) -> int | None:
    """The largest ``position_ms`` of a row group, from its statistics (None: unknown)."""
    column = meta.row_group(group).column(1)
    stats = column.statistics
    if stats is None or not stats.has_min_max:
        return None
    return int(stats.max)


def after_mask(table: pa.Table | pa.RecordBatch, after: tuple[int, int]) -> Any:
    """Rows whose position comes after ``after``."""
    ms = table.column("position_ms")
    seq = table.column("position_seq")
    return pc.or_(
        pc.greater(ms, after[0]),
        pc.and_(pc.equal(ms, after[0]), pc.greater(seq, after[1])),
    )


def before_mask(table: pa.Table, before: tuple[int, int]) -> Any:
    """Rows whose position comes before ``before``."""
    ms = table.column("position_ms")
    seq = table.column("position_seq")
    return pc.or_(
        pc.less(ms, before[0]),
        pc.and_(pc.equal(ms, before[0]), pc.less(seq, before[1])),
    )


def aggregate_rows(table: pa.Table, segment: int,
                   row_group_rows: int = ROW_GROUP_ROWS) -> pa.Table:
    """The aggregate index rows of one segment: per aggregate and row group, its versions."""
    groups = pa.array(
        [i // row_group_rows for i in range(table.num_rows)], pa.int32()
    )
    keyed = pa.table(
        {"aggregate": table.column("aggregate"), "row_group": groups,
         "version": table.column("version")}
    )
    grouped = keyed.group_by(["aggregate", "row_group"]).aggregate(
        [("version", "min"), ("version", "max")]
    )
    return pa.table(
        {
            "aggregate": grouped.column("aggregate"),
            "segment": pa.array([segment] * grouped.num_rows, pa.int32()),
            "row_group": grouped.column("row_group"),
            "first_version": grouped.column("version_min"),
            "last_version": grouped.column("version_max"),
        },
        schema=INDEX_SCHEMA,
    )


INDEX_SCHEMA = pa.schema(
    [
        ("aggregate", pa.string()),
        ("segment", pa.int32()),
        ("row_group", pa.int32()),
        ("first_version", pa.int64()),
        ("last_version", pa.int64()),
    ]
)


def bytes_list(column: pa.ChunkedArray | pa.Array) -> list[bytes]:
    """A string or binary column's values as Python bytes."""
    if pa.types.is_string(column.type):
        column = column.cast(pa.binary())
    out: list[bytes] = column.to_pylist()
    return out


def int_list(column: pa.ChunkedArray | pa.Array) -> list[int]:
    out: list[int] = column.to_pylist()
    return out


#: Columns read dictionary-encoded (few distinct values: one Python object each).
DICTIONARY_COLUMNS = ["type", "aggregate"]
#: The columns a read by position or aggregate decodes.
ROW_COLUMNS = ["position", "position_ms", "position_seq", "event_id", "aggregate", "version",
               "type", "body"]


@dataclass(slots=True)
class Rows:
    """One decoded row group, ready to hand out as flat field lists.

    Built with as few Python objects per row as it can: the type and aggregate
    columns are read dictionary-encoded, so each distinct value is one bytes
    object shared by its rows, and positions are searched by their ms and seq
    parts (no tuple per row)."""

    ms: list[int]
    seqs: list[int]
    positions: list[bytes]
    ids: list[bytes]
    types: list[bytes]
    aggregates: list[bytes]
    versions: list[int]
    #: The versions as the stream has them (``b"7"``).
    version_texts: list[bytes]
    bodies: list[bytes]
    _keys: list[tuple[int, int]] | None = None

    @property
    def keys(self) -> list[tuple[int, int]]:
        """Each row's position as ``(ms, seq)`` (built once, on first use)."""
        if self._keys is None:
            self._keys = list(zip(self.ms, self.seqs, strict=True))
        return self._keys

    @classmethod
    def of(cls, table: pa.Table) -> Rows:
        versions = int_list(table.column("version"))
        texts = {v: str(v).encode() for v in set(versions)}
        return cls(
            ms=int_list(table.column("position_ms")),
            seqs=int_list(table.column("position_seq")),
            positions=bytes_list(table.column("position")),
            ids=bytes_list(table.column("event_id")),
            types=shared_bytes(table.column("type")),
            aggregates=shared_bytes(table.column("aggregate")),
            versions=versions,
            version_texts=list(map(texts.__getitem__, versions)),
            bodies=bytes_list(table.column("body")),
        )

    def __len__(self) -> int:
        return len(self.positions)

    def index_after(self, key: tuple[int, int]) -> int:
        """The index of the first row whose position comes after ``key``."""
        lo = bisect.bisect_left(self.ms, key[0])
        hi = bisect.bisect_right(self.ms, key[0], lo)
        return bisect.bisect_right(self.seqs, key[1], lo, hi) if lo < hi else lo

    def flat(self, i: int) -> tuple[bytes, list[bytes]]:
        return self.positions[i], [
            b"i", self.ids[i], b"t", self.types[i], b"a", self.aggregates[i],
            b"v", self.version_texts[i], b"b", self.bodies[i],
        ]

    def flats(self, start: int, stop: int) -> list[tuple[bytes, list[bytes]]]:
        """Rows ``start`` to ``stop - 1`` as ``(position, flat fields)``."""
        return [(p, [b"i", i, b"t", t, b"a", a, b"v", v, b"b", b])
                for p, i, t, a, v, b in zip(
                    self.positions[start:stop], self.ids[start:stop], self.types[start:stop],
                    self.aggregates[start:stop], self.version_texts[start:stop],
                    self.bodies[start:stop], strict=True)]


def shared_bytes(column: pa.ChunkedArray | pa.Array) -> list[bytes]:
    """A string column of few distinct values as bytes, one object per distinct value."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    values = bytes_list(column.dictionary)
    indices: list[int] = column.indices.to_pylist()
    return list(map(values.__getitem__, indices))
