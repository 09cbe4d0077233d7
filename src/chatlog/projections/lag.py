"""How far a read model is behind the log: events and seconds, per partition."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field
from redis import exceptions as rexc

from chatlog.eventstore.codec import Cursor
from chatlog.eventstore.store import EventStore, _guard


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


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


async def measure_lag(store: EventStore, checkpoint: Cursor, applied: list[int]) -> ProjectionLag:
    """Compare ``checkpoint`` (with ``applied`` events per partition) to the log's heads.

    ``events_behind`` is the stream's lifetime entry count (``entries-added``)
    less the events the read model applied; ``seconds_behind`` is how long
    the oldest unapplied event has waited.
    """
    parts: list[PartitionLag] = []
    now = time.time()
    for p in range(store.partitions):
        key = store.keys.log(p)
        done = checkpoint.positions[p]
        pipe = store.redis.pipeline(transaction=False)
        pipe.xrevrange(key, "+", "-", 1)
        pipe.xrange(key, f"({done}", "+", 1)
        pipe.xlen(key)
        last, first_pending, length = await _guard(pipe.execute())
        head = last[0][0].decode() if last else done
        added = int(length)
        try:
            info = await _guard(store.redis.xinfo_stream(key))
            added = int(_field(info, "entries-added") or length)
        except rexc.ResponseError:  # no such key, or a server before Redis 7
            pass
        behind = 0
        seconds = 0.0
        if first_pending:
            behind = max(added - applied[p], 1)
            pending_ms = int(first_pending[0][0].decode().split("-", 1)[0])
            seconds = round(max(now - pending_ms / 1000, 0.0), 3)
        parts.append(PartitionLag(partition=p, checkpoint=done, head=head,
                                  events_behind=behind, seconds_behind=seconds))
    return ProjectionLag(
        caught_up=all(p.events_behind == 0 for p in parts),
        events_behind=sum(p.events_behind for p in parts),
        seconds_behind=max((p.seconds_behind for p in parts), default=0.0),
        partitions=parts,
    )
