"""Redis key layout, in one place.

Every key of one partition carries the hash tag ``{pN}``, so on Redis Cluster
a partition lives in one slot and its scripts touch one slot only.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for a log under ``prefix``."""

    prefix: str = "chatlog"

    @property
    def meta(self) -> str:
        """Hash: the log's metadata (partition count, creation time, format)."""
        return f"{self.prefix}:meta"

    def erasure(self, erasure_id: str) -> str:
        """Hash: one erasure's record (scope, step reached, counts), kept after it is done."""
        return f"{self.prefix}:erasure:{erasure_id}"

    @property
    def erasures(self) -> str:
        """Set: the ids of erasures not finished yet (resumed when ``serve`` starts)."""
        return f"{self.prefix}:erasures"

    def tag(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    def log(self, partition: int) -> str:
        """Stream: the partition's events; entry ids are positions."""
        return f"{self.tag(partition)}:log"

    def versions(self, partition: int) -> str:
        """Hash: aggregate key -> current version."""
        return f"{self.tag(partition)}:versions"

    def aggregate_index(self, partition: int, aggregate: str) -> str:
        """List: the positions of one aggregate's events, version 1 first."""
        return f"{self.tag(partition)}:agg:{aggregate}"

    def project_index(self, partition: int, project: uuid.UUID | str) -> str:
        """Stream: the positions of one project's events, as entry ids (no content).

        Every writer of the log adds to it in the same script as the event (the
        append script derives it from the stream key: ``<tag>:pidx:<project>``);
        the archiver trims it with the stream, erasure deletes from it. Replay of
        one project reads it (:mod:`chatlog.eventstore.project_index`)."""
        return f"{self.tag(partition)}:pidx:{project}"

    def event_id(self, partition: int, project: uuid.UUID, event_id: uuid.UUID) -> str:
        """String (the layout before :meth:`id_bucket`, read for a window after an
        upgrade): ``"<position> <version> <digest>"`` of an appended event (expires).

        An event id's identity is (project, event id): the same id in another
        project is another event, whatever the partition count or topology.
        """
        return f"{self.event_ids(partition, project)}{event_id}"

    def event_ids(self, partition: int, project: uuid.UUID) -> str:
        """The start of every :meth:`event_id` key of ``project`` (the event id follows)."""
        return f"{self.tag(partition)}:eid:{project}:"

    def id_bucket(self, partition: int, window_ms: int, generation: int, bucket: int) -> str:
        """Hash: remembered event ids (identity -> ``"<position> <version> <digest>"``)
        of one window's generation and bucket; it expires a window after the generation
        ends. The append script derives these names from the stream key; the layout is
        :mod:`chatlog.eventstore.idempotency`'s."""
        return f"{self.tag(partition)}:ids:{window_ms}:{generation}:{bucket}"

    def committed(self, partition: int) -> str:
        """Stream of one entry whose id is the partition's committed position (its high
        watermark): the last position replicated as ``CHATLOG_ACK=replicated`` asks.
        Readers deliver nothing past it (see :mod:`chatlog.eventstore.replication`)."""
        return f"{self.tag(partition)}:committed"

    def horizon(self, partition: int) -> str:
        """String: the last position removed by retention trimming."""
        return f"{self.tag(partition)}:horizon"

    def jobs(self, partition: int) -> str:
        """Stream: the job queue (consumer group ``workers``)."""
        return f"{self.tag(partition)}:jobs"

    def dead_letters(self, partition: int) -> str:
        """Stream: jobs that used up their deliveries."""
        return f"{self.tag(partition)}:dead"

    def job(self, partition: int, project: uuid.UUID, job_id: str) -> str:
        """Hash: one job's record (workflow, kind, payload, state).

        A job id is the project's (as an event id is): the same id in two
        projects of one partition is two jobs.
        """
        return f"{self.tag(partition)}:job:{project}:{job_id}"

    def job_index(self, partition: int, project: uuid.UUID) -> str:
        """Sorted set: a project's job ids, scored by enqueue time (ms)."""
        return f"{self.tag(partition)}:jobidx:{project}"


def partition_of(project: uuid.UUID, partitions: int) -> int:
    """The partition a project's events live in: a stable hash mod P."""
    if partitions == 1:
        return 0
    return zlib.crc32(project.bytes) % partitions
