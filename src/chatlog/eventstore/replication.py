"""Replicated acknowledgement: an append is answered once N replicas have it.

After the append scripts of one group commit, the same pipeline sends
``WAIT numreplicas timeout`` (with ``ack_fsync``, followed by ``WAITAOF 0
numreplicas timeout``: fsynced by the replicas; see :func:`_wait`) on the
same connection (on a cluster: one WAIT per node, after that node's scripts),
so WAIT covers exactly those writes. When
fewer replicas acknowledged in time, each append of that node fails with
:class:`NotReplicated` (HTTP 503): it is on the primary and may or may not
survive a failover; a retry with the same event ids is safe.

A retried append that turns out to be a duplicate wrote nothing, so WAIT on
its connection would prove nothing about the original write; so every group
commit writes a small fence (``<tag>:ackfence``) after its scripts, in the
same pipeline, on the same node, before the WAIT: replicas that have the
fence have everything that primary wrote before it, the original included.
(It used to be a second round trip, routed afresh: when a failover moved the
partition in between, the fence was confirmed on the new primary while the
original lived only on the stale one, and a duplicate reply was acknowledged
for a write the cluster then threw away.)

**The committed position (high watermark).** Once WAIT confirms a group
commit, each partition's committed position advances to the last position
that commit wrote (``<tag>:committed``: a stream holding one entry whose id
is the position; an XADD with a smaller id fails, so it only moves forward).
Everything at or before it is replicated: WAIT covers every write the primary
made before the client's last one, and stream ids grow in write order. Readers
under ``ack=replicated`` deliver nothing past it (:mod:`._topology`), so a
stale primary's appends, which WAIT never confirms, are never observed
downstream, and the clients' retries on the new primary are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis import exceptions as rexc

from chatlog.errors import NotReplicated
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import UNAVAILABLE, text

log = logging.getLogger("chatlog.eventstore.store")

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


def committed_key(log_key: str) -> str:
    """``<prefix>:{pN}:log`` → ``<prefix>:{pN}:committed`` (see :meth:`Keys.committed`)."""
    return log_key.rsplit(":", 1)[0] + ":committed"


def _status(reply: Any) -> str:
    if isinstance(reply, list) and reply:
        return text(reply[0])
    return ""


def _wait(pipe: Any, node: Any, replicas: int, timeout_ms: int, fsync: bool) -> None:
    """Queue the wait for ``replicas`` replicas; read its outcome with :func:`_take_wait`.

    ``WAITAOF 0 n t`` (``fsync``): n replicas have fsynced it (the primary's own
    fsync is its appendfsync policy). It is sent after a ``WAIT``: a replica
    answers the primary's ack request as soon as it has *applied* the writes,
    before its AOF fsync, and reports its fsynced offset again only on its
    once-a-second cron, so a lone WAITAOF takes ~1 s (measured: p50 1,009 ms on
    loopback with ``appendfsync always`` replicas). The WAIT returns once the
    replica has the writes; the WAITAOF then blocks, the primary asks again,
    and the replica (fsynced by then) answers at once: p50 1.5 ms. The WAITAOF
    gets a quarter of the timeout: once WAIT succeeded only an fsync is left.
    """
    extra = {} if node is None else {"target_nodes": node}
    pipe.execute_command("WAIT", replicas, timeout_ms, **extra)
    if fsync:
        pipe.execute_command("WAITAOF", 0, replicas, max(timeout_ms // 4, 1), **extra)


def _take_wait(it: Any, fsync: bool) -> Any:
    """The outcome of what :func:`_wait` queued, from the pipeline's replies."""
    first = next(it)
    if not fsync:
        return first
    second = next(it)
    return first if isinstance(first, BaseException) else second


def _acked(reply: Any) -> int:
    """Replicas that acknowledged, from a WAIT (int) or WAITAOF ([local, replicas]) reply."""
    if isinstance(reply, BaseException):
        return 0
    if isinstance(reply, list | tuple):
        return int(reply[1])
    return int(reply)


async def run_replicated(
    client: Any, script: Script, batch: list[Pending], replicas: int, wait_s: float,
    fsync: bool = False, *, node_groups: NodeGroups, load: bool = False,
) -> list[Any]:
    """Run the append scripts of ``batch`` and wait for ``replicas`` replicas.

    Returns one reply (or exception) per pending append, like a pipeline.
    """
    timeout_ms = max(int(wait_s * 1000), 1)
    groups = await node_groups([p.keys[0] for p in batch])
    pipe = client.pipeline(transaction=False)
    for node, idx in groups:
        extra = {} if node is None else {"target_nodes": node}
        for i in idx:
            p = batch[i]
            pipe.execute_command(*(("EVAL", script.script) if load else ("EVALSHA", script.sha)),
                                 len(p.keys), *p.keys, *p.args, **extra)
        # The fence: this connection's last write on the node, so the WAIT after it
        # covers the original write behind a duplicate reply too (which writes nothing).
        pipe.execute_command("SET", fence_key(batch[idx[0]].keys[0]), b"1", "PX",
                             FENCE_TTL_MS, **extra)
        _wait(pipe, node, replicas, timeout_ms, fsync)
    raw: list[Any] = await pipe.execute(raise_on_error=False)
    replies: list[Any] = [None] * len(batch)
    it = iter(raw)
    for _node, idx in groups:
        got = [next(it) for _ in idx]
        fenced, acked = next(it), _take_wait(it, fsync)
        n = 0 if isinstance(fenced, BaseException) else _acked(acked)
        for i, reply in zip(idx, got, strict=True):
            if isinstance(reply, BaseException):
                replies[i] = reply
            elif _status(reply) in ("ok", "dup") and n < replicas:
                replies[i] = NotReplicated(n, replicas, wait_s)
            else:
                replies[i] = reply
    missing = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
    if missing:
        # A restarted or promoted primary forgot the script; nothing of these ran. Send
        # the script itself (EVAL caches it there; SCRIPT LOAD would wait for every primary).
        again = await run_replicated(client, script, [batch[i] for i in missing], replicas,
                                     wait_s, fsync, node_groups=node_groups, load=True)
        for i, r in zip(missing, again, strict=True):
            replies[i] = r
    await advance_committed(client, batch, replies)
    return replies


async def advance_committed(client: Any, batch: Sequence[Pending], replies: list[Any]) -> None:
    """Move each partition's committed position to the last replicated position of ``batch``.

    Done before the appends are answered, so a client that reads its own
    write finds it delivered. Should it fail, the appends still stand (they
    are replicated); the next commit of the partition moves the position past them.
    """
    top: dict[str, tuple[tuple[int, int], str]] = {}
    for p, reply in zip(batch, replies, strict=True):
        if _status(reply) in ("ok", "dup") and len(reply) >= 3:
            pos = text(reply[-2])  # ok|dup, pos1, ver1, ..., posN, verN (none: no write)
            key = p.keys[0]
            parsed = parse_position(pos)
            if key not in top or parsed > top[key][0]:
                top[key] = (parsed, pos)
    if not top:
        return
    pipe = client.pipeline(transaction=False)
    for key, (_, pos) in top.items():
        # An id at or below the stream's top fails: the position never moves back.
        pipe.xadd(committed_key(key), {"c": "1"}, id=pos, maxlen=1, approximate=False)
    try:
        await pipe.execute(raise_on_error=False)
    except UNAVAILABLE as exc:
        log.warning("could not advance the committed position (%s); the next commit will", exc)


async def confirm_heads(
    client: Any, log_keys: Sequence[str], replicas: int, wait_s: float, fsync: bool,
    node_groups: NodeGroups,
) -> None:
    """Advance the committed positions of ``log_keys`` to their heads, if replicated.

    Per node: read each log's last position, write the fence, WAIT; when
    enough replicas acknowledge, everything up to those heads is replicated.
    For what no append of this process confirmed: a log written before
    ``ack=replicated`` was chosen, a migration's copy, or entries a promoted
    replica holds beyond the committed position it received.
    """
    timeout_ms = max(int(wait_s * 1000), 1)
    groups = await node_groups(log_keys)
    pipe = client.pipeline(transaction=False)
    for node, idx in groups:
        extra = {} if node is None else {"target_nodes": node}
        for i in idx:
            pipe.execute_command("XREVRANGE", log_keys[i], "+", "-", "COUNT", 1, **extra)
        pipe.execute_command("SET", fence_key(log_keys[idx[0]]), b"1", "PX", FENCE_TTL_MS,
                             **extra)
        _wait(pipe, node, replicas, timeout_ms, fsync)
    raw: list[Any] = await pipe.execute(raise_on_error=False)
    heads: list[tuple[str, str]] = []
    it = iter(raw)
    for _node, idx in groups:
        lasts = [next(it) for _ in idx]
        fenced = next(it)
        acked = _take_wait(it, fsync)
        if isinstance(fenced, BaseException) or _acked(acked) < replicas:
            continue
        for i, last in zip(idx, lasts, strict=True):
            if isinstance(last, list) and last:
                heads.append((log_keys[i], text(last[0][0])))
    if heads:
        pipe = client.pipeline(transaction=False)
        for key, pos in heads:
            pipe.xadd(committed_key(key), {"c": "1"}, id=pos, maxlen=1, approximate=False)
        await pipe.execute(raise_on_error=False)
