"""The archive tier: sealed, immutable Parquet segments of each partition's old events,
with a manifest per partition and an aggregate -> segments index (docs/archive.md).

:class:`Archive` opens and reads manifests without pyarrow (``chatlog serve``
starts without it); the names below that need pyarrow import it when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatlog.eventstore.archive._archive import Archive, StagedSegment, StepHook
from chatlog.eventstore.archive._manifest import SegmentInfo

if TYPE_CHECKING:
    from chatlog.eventstore.archive._erase import ArchiveErasure, erase_rows
    from chatlog.eventstore.archive._projects import read_project, read_project_before
    from chatlog.eventstore.archive._segments import BATCH_COLUMNS, ROW_GROUP_ROWS, SCHEMA

#: The names of modules that import pyarrow, by the module that holds them.
_LAZY = {
    "ArchiveErasure": "_erase", "erase_rows": "_erase",
    "read_project": "_projects", "read_project_before": "_projects",
    "BATCH_COLUMNS": "_segments", "ROW_GROUP_ROWS": "_segments", "SCHEMA": "_segments",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
