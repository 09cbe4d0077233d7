"""Open-wait snapshots kept with the archive, so start-up never reads archived history.

The orchestrator's durable timer needs every workflow's open wait (waiting for
``start_task`` or an approval, with its deadline). It gets them from the
workflows read model at its checkpoint; a data dir without one (a new node, a
lost disk) or a read model whose checkpoint lies inside the archive would have
to read the whole log. So the archiver keeps, beside the segments, one small
snapshot per partition: the open waits of the log up to the last position it
archived (the fold the timer itself does, of workflow events only), advanced
each time it publishes a segment::

    <archive>/snapshots/partition=<N>.json
        {"format": "chatlog-open-waits/1", "partition": N, "position": "<ms>-<seq>",
         "waits": [{"project", "workflow_id", "project_name", "version",
                    "opened_by", "data", "time_ms"}, ...]}

A snapshot is the fold of every event up to ``position``, whatever it is: one
that lags (a pass that crashed before writing it, an archive older than this
file) is still right, the reader just reads the log after an older position;
the archiver folds the archived segments it is missing before advancing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from chatlog.events import AWAITED, STATE_AFTER
from chatlog.eventstore.codec import START, decode_entry, flat_field, flat_fields, parse_position
from chatlog.eventstore.connection import text

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive, SegmentInfo, StagedSegment

log = logging.getLogger(__name__)

FORMAT = "chatlog-open-waits/1"
#: In an entry's aggregate: the entry belongs to a workflow.
WORKFLOW_MARK = b"/workflow/"


@dataclass
class WaitsSnapshot:
    """The open waits of one partition's log up to ``position`` (``START``: none read)."""

    partition: int
    position: str = START
    #: By aggregate key (``<project>/workflow/<id>``): the read model's open-wait row shape.
    waits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fold(self, entries: Iterable[tuple[bytes | str, Sequence[bytes]]]) -> None:
        """Observe ``entries`` (flat stream entries, in log order); those at or before
        ``position`` are skipped."""
        done = parse_position(self.position)
        last = None
        for pos, flat in entries:
            last = pos
            if WORKFLOW_MARK not in flat_field(flat, b"a") or parse_position(text(pos)) <= done:
                continue
            self._observe(pos, flat)
        if last is not None and parse_position(text(last)) > done:
            self.position = text(last)

    def _observe(self, pos: bytes | str, flat: Sequence[bytes]) -> None:
        event = decode_entry(self.partition, pos, flat_fields(flat))
        key = f"{event.project}/{event.aggregate_type}/{event.aggregate_id}"
        target = STATE_AFTER.get(event.type)
        if target is None:  # a job event: the workflow's version moves on
            wait = self.waits.get(key)
            if wait is not None and event.version > wait["version"]:
                wait["version"] = event.version
            return
        if target not in AWAITED or not isinstance(event.data.get("deadline"), str):
            self.waits.pop(key, None)
            return
        self.waits[key] = {
            "project": str(event.project), "workflow_id": event.aggregate_id,
            "project_name": event.project_name, "version": event.version,
            "opened_by": event.type, "data": event.data,
            "time_ms": parse_position(event.position)[0],
        }

    def dumps(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "partition": self.partition,
                             "position": self.position, "waits": list(self.waits.values())})

    @classmethod
    def loads(cls, data: bytes) -> WaitsSnapshot:
        doc = orjson.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not an open-wait snapshot ({doc.get('format')!r})")
        waits = {f"{w['project']}/workflow/{w['workflow_id']}": w for w in doc["waits"]}
        return cls(int(doc["partition"]), str(doc["position"]), waits)


def snapshot_path(archive: Archive, partition: int) -> str:
    return archive.storage.join("snapshots", f"partition={partition}.json")


def read_snapshot(archive: Archive, partition: int) -> WaitsSnapshot | None:
    """The partition's snapshot (None: none yet, or unreadable: then said in the log)."""
    try:
        return WaitsSnapshot.loads(archive.storage.read_bytes(snapshot_path(archive, partition)))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("open-wait snapshot of partition %d is unreadable (%s); ignored",
                    partition, exc)
        return None


def advance_snapshot(archive: Archive, partition: int,
                     entries: Sequence[tuple[bytes, Sequence[bytes]]]) -> WaitsSnapshot:
    """After ``entries`` were published as a segment: fold them into the partition's
    snapshot, first folding any archived segment before them that it lacks, and
    write it (atomically). Called by the archiver holding the partition's lease."""
    snap = read_snapshot(archive, partition) or WaitsSnapshot(partition)
    if entries:
        first = parse_position(text(entries[0][0]))
        done = parse_position(snap.position)
        if any(parse_position(s.last) > done and parse_position(s.first) < first
               for s in archive.segments(partition)):
            _fold_archived(archive, snap, first)
        snap.fold(entries)
    archive.storage.makedirs(archive.storage.join("snapshots"))
    archive.storage.replace_bytes(snapshot_path(archive, partition), snap.dumps())
    return snap


def _fold_archived(archive: Archive, snap: WaitsSnapshot, before: tuple[int, int]) -> None:
    """Fold the archived events after ``snap.position`` and before ``before``, reading
    the workflow rows only (columnar filter)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from chatlog.eventstore.tiers import batch_entries

    for batch in archive.iter_batches(snap.partition, snap.position):
        positions = batch.column("position").to_pylist()
        keep = [parse_position(p) < before for p in positions]
        if not any(keep):
            break
        rows = batch.filter(pc.and_(pc.match_substring(batch.column("aggregate"), "/workflow/"),
                                    pa.array(keep)))
        snap.fold(batch_entries(rows))
        last = max((p for p, k in zip(positions, keep, strict=True) if k),
                   key=parse_position)
        if parse_position(last) > parse_position(snap.position):
            snap.position = last
        if not all(keep):
            break


def publish_then_snapshot(archive: Archive, staged: StagedSegment,
                          entries: Sequence[tuple[bytes, Sequence[bytes]]], *, fence: int,
                          on_step: Callable[[str], None] | None = None) -> SegmentInfo:
    """``archive.publish(staged)`` (the segment of ``entries``), then advance the
    partition's open-wait snapshot past it (the archiver's publish step)."""
    info = archive.publish(staged, fence=fence, on_step=on_step)
    advance_quietly(archive, staged.partition, entries)
    return info


def advance_quietly(archive: Archive, partition: int,
                    entries: Sequence[tuple[bytes, Sequence[bytes]]]) -> None:
    """:func:`advance_snapshot`, logging instead of raising: a snapshot that lags is
    still right (start-up then reads a little more of the log)."""
    try:
        advance_snapshot(archive, partition, entries)
    except Exception:
        log.warning("archiver: the open-wait snapshot of partition %d was not advanced",
                    partition, exc_info=True)


def erase_from_snapshot(archive: Archive, partition: int, project: str,
                        aggregate: str | None = None, prefix: str | None = None) -> int:
    """Drop the open waits of an erased scope (``project``, or its ``aggregate`` only, or
    the aggregates under ``prefix``, as ``erase_rows`` scopes it) from the partition's
    snapshot, so no restart brings them back; how many it dropped."""
    snap = read_snapshot(archive, partition)
    if snap is None:
        return 0

    def erased(key: str, wait: dict[str, Any]) -> bool:
        if prefix is not None:
            return key.startswith(prefix)
        return wait["project"] == project if aggregate is None else key == aggregate

    gone = [key for key, wait in snap.waits.items() if erased(key, wait)]
    for key in gone:
        del snap.waits[key]
    if gone:
        archive.storage.replace_bytes(snapshot_path(archive, partition), snap.dumps())
    return len(gone)
