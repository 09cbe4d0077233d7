"""Where a starting orchestrator begins, per partition: the further of the workflows
read model's checkpoint and the archive's open-wait snapshot (``eventstore/waits.py``).

Either one is the fold of the log up to its position, so the open waits of the
chosen one plus the log after its position are every open wait. A data dir
without a read model, or one whose checkpoint lies inside the archive, starts
from the snapshot: it reads the hot tail, not the archived history.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from chatlog.eventstore import EventStore
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.waits import WaitsSnapshot, read_snapshot
from chatlog.projections.workflows import OpenWaitRow, RestorePoint


@dataclass(frozen=True)
class StartPoint:
    """Per partition: the position to read the log after, and where it came from."""

    positions: list[str]
    sources: list[str]
    #: The open waits at those positions (the read model's rows, or the snapshot's).
    rows: list[OpenWaitRow]

    @property
    def restored(self) -> bool:
        """Whether any partition starts past the log's start."""
        return any(s != "start" for s in self.sources)

    def describe(self) -> str:
        names = {"start": "the log's start", "read model": "the read model",
                 "snapshot": "the archive's open-wait snapshot"}
        return "; ".join(f"partition {p}: {names[s]} at {pos}" for p, (s, pos)
                         in enumerate(zip(self.sources, self.positions, strict=True)))


async def read_snapshots(store: EventStore) -> dict[int, WaitsSnapshot]:
    """The archive's open-wait snapshots, by partition (none without an archive)."""
    archive = store.archive
    if archive is None:
        return {}

    def read() -> dict[int, WaitsSnapshot]:
        found = {p: read_snapshot(archive, p) for p in range(store.partitions)}
        return {p: s for p, s in found.items() if s is not None}

    return await asyncio.to_thread(read)


def start_point(store: EventStore, point: RestorePoint | None,
                snapshots: dict[int, WaitsSnapshot]) -> StartPoint:
    """Choose, per partition, the read model's checkpoint or the snapshot: the further."""
    positions, sources = [START] * store.partitions, ["start"] * store.partitions
    for p in range(store.partitions):
        if point is not None and point.positions[p] != START:
            positions[p], sources[p] = point.positions[p], "read model"
        snap = snapshots.get(p)
        if snap is not None and parse_position(snap.position) > parse_position(positions[p]):
            positions[p], sources[p] = snap.position, "snapshot"
    rows: list[OpenWaitRow] = []
    if point is not None:
        rows.extend(r for r in point.open_waits
                    if sources[store.partition_of(uuid.UUID(r.project))] == "read model")
    for p, snap in snapshots.items():
        if sources[p] == "snapshot":
            rows.extend(OpenWaitRow(w["project"], w["workflow_id"], w["project_name"],
                                    int(w["version"]), w["opened_by"], w["data"],
                                    int(w["time_ms"])) for w in snap.waits.values())
    return StartPoint(positions, sources, rows)
