"""Operators' view of the job streams: dead letters and per-partition counts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from redis import exceptions as rexc

from chatlog.eventstore.codec import flat_fields
from chatlog.eventstore.connection import text
from chatlog.eventstore.store import EventStore
from chatlog.orchestrator.jobs import GROUP, DeadLetter


async def list_dead_letters(
    store: EventStore, *, limit: int = 100, partitions: Sequence[int] | None = None
) -> list[DeadLetter]:
    """Dead-lettered jobs, oldest first (per partition), at most ``limit``."""
    out: list[DeadLetter] = []
    for p in partitions if partitions is not None else range(store.partitions):
        if len(out) >= limit:
            break
        redis: Any = store.redis
        entries = await redis.xrange(store.keys.dead_letters(p), "-", "+", limit - len(out))
        for entry_id, flat in entries:
            f = flat_fields(flat)
            out.append(DeadLetter(
                job_id=text(f[b"job"]), kind=text(f[b"kind"]), payload=orjson.loads(f[b"payload"]),
                project=uuid.UUID(text(f[b"project"])), project_name=text(f[b"name"]),
                workflow_id=text(f[b"workflow"]), deliveries=int(f[b"deliveries"]),
                reason=text(f[b"reason"]), partition=p, position=text(entry_id),
            ))
    return out


async def job_status(store: EventStore) -> dict[str, Any]:
    """Per partition: jobs in the stream, pending (delivered, not acknowledged), dead letters."""
    redis: Any = store.redis
    parts = []
    for p in range(store.partitions):
        keys = store.keys
        length = int(await redis.xlen(keys.jobs(p)))
        dead = int(await redis.xlen(keys.dead_letters(p)))
        pending = 0
        if length:
            try:
                info = await redis.xpending(keys.jobs(p), GROUP)
                pending = int(info["pending"] if isinstance(info, dict) else info[0])
            except rexc.ResponseError:  # no group yet
                pending = 0
        parts.append({"partition": p, "jobs": length, "pending": pending, "dead_letters": dead})
    return {"jobs": parts}

