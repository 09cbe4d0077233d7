"""A partition's manifest: the list of its published segments, replaced atomically.

``partition=<p>/manifest.json``::

    {"format": "chatlog-archive/1", "partition": 0, "generation": 7, "fence": 3,
     "next_segment": 8, "deleted_before": null,
     "indexes": [{"name": "aggregates-4.arrow", "rows": 4000},
                 {"name": "aggregates-7.arrow", "rows": 1000}],
     "segments": [{"id": 1, "name": "...parquet", "first": "...", "last": "...",
                   "count": 100000, "bytes": 8123456, "checksum": "blake2b:...",
                   "fence": 3, "created": 1764500000.0}, ...]}

Only a partition's archiver (the holder of its lease) writes it; readers only
read it, so a reader sees a segment exactly when its entry is in the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from chatlog.errors import ArchiveConflict, ArchiveCorrupt

#: The archive's format, in every manifest and segment.
FORMAT = "chatlog-archive/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One published segment: events ``first`` to ``last`` (stream positions) of a partition."""

    partition: int
    first: str
    last: str
    count: int
    bytes: int
    path: str
    checksum: str
    #: The segment's number in its partition (the aggregate index refers to it).
    id: int = 0


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    id: int
    name: str
    first: str
    last: str
    count: int
    bytes: int
    checksum: str
    fence: int
    created: float


@dataclass(frozen=True, slots=True)
class IndexRun:
    name: str
    rows: int


@dataclass(slots=True)
class Manifest:
    partition: int
    generation: int = 0
    #: The largest fencing token that published here; a smaller one may not publish.
    fence: int = 0
    next_segment: int = 1
    #: Set by a deliberate deletion: nothing before this position is kept.
    deleted_before: str | None = None
    #: The aggregate -> segments index: runs (Arrow IPC files beside the manifest),
    #: oldest first. Each publish adds a run; runs of similar size are merged, so
    #: there are about log2(segments) of them and a publish rewrites little.
    indexes: list[IndexRun] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)

    def admit(self, fence: int | None, refused: str) -> int:
        """The fencing token a writer holding ``fence`` records here (None: no lease, the
        manifest's own); :class:`ArchiveConflict` ending in ``refused`` when a newer
        lease published here."""
        if fence is None:
            return self.fence
        if fence < self.fence:
            raise ArchiveConflict(
                f"partition {self.partition}: an archiver with a newer lease (fencing token "
                f"{self.fence} > {fence}) {refused}"
            )
        return max(self.fence, fence)

    def dumps(self) -> bytes:
        doc: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def loads(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = orjson.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
            return cls(
                partition=int(doc["partition"]),
                generation=int(doc["generation"]),
                fence=int(doc["fence"]),
                next_segment=int(doc["next_segment"]),
                deleted_before=doc.get("deleted_before"),
                indexes=[IndexRun(**r) for r in doc.get("indexes", [])],
                segments=[SegmentEntry(**s) for s in doc["segments"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveCorrupt(f"archive manifest {where} cannot be read: {exc}") from exc
