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

    def event_id(self, partition: int, event_id: uuid.UUID) -> str:
        """String: ``"<position> <version>"`` of a client-identified event (expires)."""
        return f"{self.tag(partition)}:eid:{event_id}"

    def horizon(self, partition: int) -> str:
        """String: the last position removed by retention trimming."""
        return f"{self.tag(partition)}:horizon"

    def jobs(self, partition: int) -> str:
        """Stream: the job queue (consumer group ``workers``)."""
        return f"{self.tag(partition)}:jobs"

    def dead_letters(self, partition: int) -> str:
        """Stream: jobs that used up their deliveries."""
        return f"{self.tag(partition)}:dead"

    def job(self, partition: int, job_id: str) -> str:
        """Hash: one job's record (workflow, kind, payload, state)."""
        return f"{self.tag(partition)}:job:{job_id}"

    def job_index(self, partition: int, project: uuid.UUID) -> str:
        """Sorted set: a project's job ids, scored by enqueue time (ms)."""
        return f"{self.tag(partition)}:jobidx:{project}"


def partition_of(project: uuid.UUID, partitions: int) -> int:
    """The partition a project's events live in: a stable hash mod P."""
    if partitions == 1:
        return 0
    return zlib.crc32(project.bytes) % partitions
