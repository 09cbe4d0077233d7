"""Scripts of other writers that append to the log, acknowledged as the store's appends are.

The integrations (the LangGraph saver, the eventsourcing recorders) append
with scripts of their own that also keep their index keys. Run through
:func:`run_append_script`, such a script gets the store's acknowledgement
policy: under ``ack=replicated`` it is answered once ``ack_replicas``
replicas have it, and the partition's committed position (replicated high
watermark) moves past what it wrote, so readers that stop there deliver it.

The script's reply must follow the append script's shape for that:
``{'ok', position 1, x 1, ..., position N, x N}`` when it appended (the last
position is what the committed position moves to), any other status
(``{'conflict', ...}``) when it wrote nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatlog.eventstore.connection import as_raised, text
from chatlog.eventstore.replication import run_replicated

if TYPE_CHECKING:
    from chatlog.eventstore.store import EventStore


@dataclass(slots=True)
class _Call:
    keys: list[str]
    args: list[Any]


async def run_append_script(store: EventStore, script: Any, keys: Sequence[str],
                            args: Sequence[Any]) -> Any:
    """Run ``script`` (registered on ``store.redis``; ``keys[0]`` is the partition's log
    key) under the store's acknowledgement policy; its reply.

    Raises :class:`~chatlog.errors.NotReplicated` when too few replicas acknowledged
    in time (the write is on the primary: retrying it must be safe).
    """
    if store.ack != "replicated":
        return await run_script(store, script, keys, args)
    replies = await run_replicated(
        store.redis, script, [_Call(list(keys), list(args))], store.ack_replicas,
        store.ack_timeout, store.ack_fsync,
        node_groups=store._topology.node_groups,  # the store's own package
    )
    reply = replies[0]
    if isinstance(reply, BaseException):
        raise as_raised(reply)
    return reply


async def run_script(store: EventStore, script: Any, keys: Sequence[str],
                     args: Sequence[Any]) -> Any:
    """Run ``script`` (registered on ``store.redis``) over the store's lean connection
    when it has one (one server, not TLS: what its group commits use), else through
    redis-py; its reply. For scripts that read, or that :func:`run_append_script`
    runs under ``ack=local``."""
    lean = store._topology.lean  # the store's own package
    if lean is not None:
        return await lean.evalsha(text(script.sha), text(script.script), list(keys), list(args))
    return await script(keys=list(keys), args=list(args))
