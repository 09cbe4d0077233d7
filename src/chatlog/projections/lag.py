"""How far a read model is behind the log: events and seconds, per partition."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from chatlog.eventstore.codec import Cursor
from chatlog.eventstore.store import EventStore


class PartitionLag(BaseModel):
    """One partition: where the read model is, where the log is."""

    partition: int
    checkpoint: str = Field(description="Last position applied to the read model")
    head: str = Field(description="Last position in the log")
    events_behind: int = Field(description="Events in the log not yet applied")
    seconds_behind: float = Field(
        description="Age of the oldest event not yet applied (0 when caught up)")


class ProjectionLag(BaseModel):
    """The read model's lag behind the log's head."""

    caught_up: bool
    events_behind: int
    seconds_behind: float
    partitions: list[PartitionLag]


async def measure_lag(store: EventStore, checkpoint: Cursor, applied: list[int]) -> ProjectionLag:
    """Compare ``checkpoint`` (with ``applied`` events per partition) to the log's heads.

    ``events_behind`` is the stream's lifetime entry count (``entries-added``)
    less the events the read model applied; ``seconds_behind`` is how long
    the oldest unapplied event has waited.
    """
    parts: list[PartitionLag] = []
    now = time.time()
    for p in range(store.partitions):
        done = checkpoint.positions[p]
        info = await store.log_info(p, done)
        behind = 0
        seconds = 0.0
        if info.next_position is not None:
            behind = max(info.added - applied[p], 1)
            pending_ms = int(info.next_position.split("-", 1)[0])
            seconds = round(max(now - pending_ms / 1000, 0.0), 3)
        parts.append(PartitionLag(partition=p, checkpoint=done, head=info.head or done,
                                  events_behind=behind, seconds_behind=seconds))
    return ProjectionLag(
        caught_up=all(p.events_behind == 0 for p in parts),
        events_behind=sum(p.events_behind for p in parts),
        seconds_behind=max((p.seconds_behind for p in parts), default=0.0),
        partitions=parts,
    )
