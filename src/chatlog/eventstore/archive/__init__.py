"""The archive tier: sealed, immutable Parquet segments of each partition's old events,
with a manifest per partition and an aggregate -> segments index (docs/archive.md)."""

from chatlog.eventstore.archive._archive import Archive, StagedSegment, StepHook
from chatlog.eventstore.archive._erase import ArchiveErasure, erase_rows
from chatlog.eventstore.archive._manifest import SegmentInfo
from chatlog.eventstore.archive._projects import read_project, read_project_before
from chatlog.eventstore.archive._segments import BATCH_COLUMNS, ROW_GROUP_ROWS, SCHEMA

__all__ = [
    "BATCH_COLUMNS",
    "ROW_GROUP_ROWS",
    "SCHEMA",
    "Archive",
    "ArchiveErasure",
    "SegmentInfo",
    "StagedSegment",
    "StepHook",
    "erase_rows",
    "read_project",
    "read_project_before",
]
