"""Replicated acknowledgement: an append is answered once N replicas have it.

After the append scripts of one group commit, the same pipeline sends
``WAIT numreplicas timeout`` (or, with ``ack_fsync``, ``WAITAOF 0 numreplicas
timeout``: fsynced by the replicas) on the same connection (on a cluster: one WAIT per
node, after that node's scripts), so WAIT covers exactly those writes. When
fewer replicas acknowledged in time, each append of that node fails with
:class:`NotReplicated` (HTTP 503): it is on the primary and may or may not
survive a failover; a retry with the same event ids is safe.

A retried append that turns out to be a duplicate wrote nothing, so WAIT on
its connection would prove nothing about the original write; for those a
small fence write (``<tag>:ackfence``) on the partition's primary is followed
by WAIT: replicas that have the fence have everything the primary wrote before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis import exceptions as rexc

from chatlog.errors import NotReplicated
from chatlog.eventstore.connection import text

#: How long the fence key lives (it only needs to outlive one WAIT).
FENCE_TTL_MS = 60_000


class Pending(Protocol):
    keys: list[str]
    args: list[Any]


class Script(Protocol):
    sha: str
    script: Any


#: ``[(node or None, indexes of the keys)]`` for some log keys: one group per node
#: they live on (see :meth:`chatlog.eventstore._topology.Topology.node_groups`).
NodeGroups = Callable[[Sequence[str]], Awaitable[list[tuple[Any, list[int]]]]]


def fence_key(log_key: str) -> str:
    """``<prefix>:{pN}:log`` → ``<prefix>:{pN}:ackfence`` (same slot)."""
    return log_key.rsplit(":", 1)[0] + ":ackfence"


def _status(reply: Any) -> str:
    if isinstance(reply, list) and reply:
        return text(reply[0])
    return ""


def _wait(pipe: Any, node: Any, replicas: int, timeout_ms: int, fsync: bool) -> None:
    # WAITAOF 0 n t: n replicas have fsynced it (the primary's own fsync is its
    # appendfsync policy: with "always" the append was on disk before it answered).
    args = ("WAITAOF", 0, replicas, timeout_ms) if fsync else ("WAIT", replicas, timeout_ms)
    extra = {} if node is None else {"target_nodes": node}
    pipe.execute_command(*args, **extra)


def _acked(reply: Any) -> int:
    """Replicas that acknowledged, from a WAIT (int) or WAITAOF ([local, replicas]) reply."""
    if isinstance(reply, BaseException):
        return 0
    if isinstance(reply, list | tuple):
        return int(reply[1])
    return int(reply)


async def run_replicated(
    client: Any, script: Script, batch: list[Pending], replicas: int, wait_s: float,
    fsync: bool = False, *, node_groups: NodeGroups,
) -> list[Any]:
    """Run the append scripts of ``batch`` and wait for ``replicas`` replicas.

    Returns one reply (or exception) per pending append, like a pipeline.
    """
    timeout_ms = max(int(wait_s * 1000), 1)
    groups = await node_groups([p.keys[0] for p in batch])
    pipe = client.pipeline(transaction=False)
    for node, idx in groups:
        for i in idx:
            p = batch[i]
            extra = {} if node is None else {"target_nodes": node}
            pipe.execute_command("EVALSHA", script.sha, len(p.keys), *p.keys, *p.args, **extra)
        _wait(pipe, node, replicas, timeout_ms, fsync)
    raw: list[Any] = await pipe.execute(raise_on_error=False)
    replies: list[Any] = [None] * len(batch)
    it = iter(raw)
    for _node, idx in groups:
        got = [next(it) for _ in idx]
        acked = next(it)
        for i, reply in zip(idx, got, strict=True):
            if isinstance(reply, BaseException):
                replies[i] = reply
            elif _status(reply) == "ok" and _acked(acked) < replicas:
                replies[i] = NotReplicated(_acked(acked), replicas, wait_s)
            else:
                replies[i] = reply
    missing = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
    if missing:
        # A restarted or promoted primary forgot the script; nothing of these ran.
        script.sha = await client.script_load(script.script)
        again = await run_replicated(client, script, [batch[i] for i in missing], replicas,
                                     wait_s, fsync, node_groups=node_groups)
        for i, r in zip(missing, again, strict=True):
            replies[i] = r
    dups = [i for i, r in enumerate(replies) if _status(r) == "dup"]
    if dups:
        await _fence(client, batch, dups, replies, replicas, wait_s, fsync, node_groups)
    return replies


async def _fence(
    client: Any, batch: list[Pending], dups: list[int], replies: list[Any], replicas: int,
    wait_s: float, fsync: bool, node_groups: NodeGroups,
) -> None:
    """Make sure the original writes behind duplicate replies are on ``replicas`` replicas."""
    timeout_ms = max(int(wait_s * 1000), 1)
    subset = [batch[i] for i in dups]
    groups = await node_groups([p.keys[0] for p in subset])
    pipe = client.pipeline(transaction=False)
    for node, idx in groups:
        key = fence_key(subset[idx[0]].keys[0])
        extra = {} if node is None else {"target_nodes": node}
        pipe.execute_command("SET", key, b"1", "PX", FENCE_TTL_MS, **extra)
        _wait(pipe, node, replicas, timeout_ms, fsync)
    raw: list[Any] = await pipe.execute(raise_on_error=False)
    for k, (_node, idx) in enumerate(groups):
        fenced, acked = raw[2 * k], raw[2 * k + 1]
        n = 0 if isinstance(fenced, BaseException) else _acked(acked)
        if n < replicas:
            for j in idx:
                replies[dups[j]] = NotReplicated(n, replicas, wait_s)
