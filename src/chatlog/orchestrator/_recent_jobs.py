"""The jobs a restored orchestrator re-checks: those enqueued in the last day before the
position it starts from.

``enqueue_job`` appends ``job.enqueued`` and then pushes the job; a crash between
the two leaves a job no worker sees, which the next orchestrator to read the
event pushes (idempotently). One that starts from a checkpoint does not read the
events before it, so it re-checks the recent ones there: from the workflows read
model for partitions that start at its checkpoint, and from the archive for
partitions that start at the archive's open-wait snapshot (a node without a read
model, or one whose read model lies behind the snapshot): the read model does
not hold those, and the segments do. Reading them scans only the segments of
that last day, columnar, decoding the ``job.enqueued`` rows only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlog.events import JobEnqueued
from chatlog.eventstore.codec import MAX_ID, decode_entry, flat_fields, parse_position
from chatlog.eventstore.tiers import batch_entries

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive

#: A recent job: (project, project name, workflow id, the job.enqueued data).
RecentJob = tuple[str, str, str, dict[str, Any]]


def archived_recent_jobs(archive: Archive, partition: int, since_ms: int,
                         upto: str) -> list[RecentJob]:
    """The ``job.enqueued`` events of ``partition``'s archive at positions from
    ``since_ms`` (milliseconds) up to ``upto`` included, oldest first."""
    import pyarrow.compute as pc

    archive.reload()
    bound = parse_position(upto)
    # Positions after the last one of the millisecond before ``since_ms``.
    after = f"{since_ms - 1}-{MAX_ID}" if since_ms > 0 else "0-0"
    out: list[RecentJob] = []
    for batch in archive.iter_batches(partition, after):
        jobs = batch.filter(pc.equal(batch.column("type"), JobEnqueued.event_type))
        for pos, flat in batch_entries(jobs) if jobs.num_rows else []:
            if parse_position(pos.decode()) > bound:
                return out
            ev = decode_entry(partition, pos, flat_fields(flat))
            out.append((str(ev.project), ev.project_name, ev.aggregate_id, ev.data))
        last = batch.column("position")[-1].as_py() if batch.num_rows else None
        if last is not None and parse_position(str(last)) > bound:
            break
    return out
