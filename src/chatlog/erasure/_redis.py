"""The hot tier's side of an erasure: stream entries, aggregate indexes, versions,
then an AOF rewrite on every node so no file keeps the erased bytes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from chatlog.errors import StoreUnavailable
from chatlog.eventstore import EventStore
from chatlog.eventstore.cluster import every_server
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import guard, text

#: Dead letters read per round trip while looking for a project's.
SCAN_CHUNK = 2_000
#: Entries deleted per XDEL.
DELETE_CHUNK = 500

#: Drops from each aggregate index (KEYS[2..]) its positions before ARGV[1] (ms) /
#: ARGV[2] (seq); when none is left the index and the aggregate's version in the
#: versions hash (KEYS[1]; aggregates from ARGV[3] on) go, so appends to it after
#: the erasure start a fresh history at version 1.
PRUNE_INDEXES = """
local ms, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
for k = 2, #KEYS do
  local ids = redis.call('LRANGE', KEYS[k], 0, -1)
  local keep = {}
  for _, id in ipairs(ids) do
    local dash = string.find(id, '-', 1, true)
    local a, b = tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
    if a > ms or (a == ms and b >= seq) then keep[#keep + 1] = id end
  end
  if #keep ~= #ids then
    redis.call('DEL', KEYS[k])
    if #keep == 0 then
      redis.call('HDEL', KEYS[1], ARGV[k + 1])
    else
      for i = 1, #keep, 1000 do
        redis.call('RPUSH', KEYS[k], unpack(keep, i, math.min(i + 999, #keep)))
      end
    end
  end
end
return 0
"""


def in_scope(aggregate: str, project: str, aggregate_key: str | None,
             prefix: str | None = None) -> bool:
    """Whether ``aggregate`` is erased: the thread's (``aggregate_key``), those under
    ``prefix``, or any of the project's but its erasures' (whose tombstones stay)."""
    if aggregate_key is not None:
        return aggregate == aggregate_key
    if prefix is not None:
        return aggregate.startswith(prefix)
    return aggregate.startswith(f"{project}/") and not aggregate.startswith(
        f"{project}/erasure/")


def glob_escape(literal: str) -> str:
    """``literal`` as a SCAN MATCH pattern that matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in literal)


async def scope_aggregates(store: EventStore, partition: int, project: str,
                           aggregate_key: str | None, prefix: str | None) -> set[str]:
    """The aggregates of the scope that have an index list (every one that has events)."""
    if aggregate_key is not None:
        return {aggregate_key}
    aggregates = set()
    base = store.keys.aggregate_index(partition, "")
    pattern = glob_escape(base + (prefix if prefix is not None else f"{project}/")) + "*"
    async for key in store.redis.scan_iter(match=pattern, count=1000):
        agg = text(key)[len(base):]
        if in_scope(agg, project, None, prefix):
            aggregates.add(agg)
    return aggregates


async def count_scope(store: EventStore, partition: int, project: str,
                      aggregate_key: str | None, prefix: str | None) -> int:
    """How many events the scope has (hot and archived), as its index lists count them."""
    aggregates = sorted(await scope_aggregates(store, partition, project, aggregate_key, prefix))
    total = 0
    for i in range(0, len(aggregates), DELETE_CHUNK):
        pipe = store.redis.pipeline(transaction=False)
        for agg in aggregates[i:i + DELETE_CHUNK]:
            pipe.llen(store.keys.aggregate_index(partition, agg))
        total += sum(int(n) for n in await guard(pipe.execute()))
    return total


async def erase_hot(store: EventStore, partition: int, project: str,
                    aggregate_key: str | None, before: str, *,
                    prefix: str | None = None) -> int:
    """XDEL the scope's entries of ``partition`` before position ``before`` and prune
    the aggregates' indexes and versions; return how many entries were deleted.

    The entries are found through the aggregates' index lists (every writer, the
    append script and ``migrate``, keeps them), so the cost is the scope's size,
    not the partition's.
    """
    log = store.keys.log(partition)
    aggregates = await scope_aggregates(store, partition, project, aggregate_key, prefix)
    bound = parse_position(before)
    ms, _, seq = before.partition("-")
    prune = store.redis.register_script(PRUNE_INDEXES)
    erased = 0
    ordered = sorted(aggregates)
    # Pipelined: with appendfsync always each round trip of writes costs an fsync.
    for i in range(0, len(ordered), DELETE_CHUNK):
        group = ordered[i:i + DELETE_CHUNK]
        pipe = store.redis.pipeline(transaction=False)
        for agg in group:
            pipe.lrange(store.keys.aggregate_index(partition, agg), 0, -1)
        lists = await guard(pipe.execute())
        positions = [p for found in lists for p in found if parse_position(text(p)) < bound]
        pipe = store.redis.pipeline(transaction=False)
        for j in range(0, len(positions), DELETE_CHUNK):
            pipe.xdel(log, *positions[j:j + DELETE_CHUNK])
            pipe.xdel(store.keys.project_index(partition, project),
                      *positions[j:j + DELETE_CHUNK])
        erased += sum(int(r) for r in (await guard(pipe.execute()))[::2])
        await guard(prune(
            keys=[store.keys.versions(partition),
                  *(store.keys.aggregate_index(partition, agg) for agg in group)],
            args=[ms, seq, *group]))
    return erased


async def erase_jobs(store: EventStore, partition: int, project: str) -> int:
    """Remove the project's job records, its job stream and dead-letter entries
    (they carry the payloads); return how many jobs were removed."""
    key_of = uuid.UUID(project)
    index = store.keys.job_index(partition, key_of)
    jobs = [text(j) for j in await guard(store.redis.zrange(index, 0, -1))]
    queue = store.keys.jobs(partition)
    for job_id in jobs:
        key = store.keys.job(partition, key_of, job_id)
        entry = await guard(store.redis.hget(key, "entry"))
        if entry:
            await guard(store.redis.xdel(queue, entry))
        await guard(store.redis.delete(key))
    dead = store.keys.dead_letters(partition)
    start = "-"
    while True:
        found: Any = await guard(store.redis.xrange(dead, start, "+", SCAN_CHUNK))
        entries: list[Any] = found or []
        doomed: list[Any] = [pos for pos, f in entries
                             if text((f or {}).get(b"project", b"")) == project]
        if doomed:
            await guard(store.redis.xdel(dead, *doomed))
        if len(entries) < SCAN_CHUNK:
            break
        start = f"({text(entries[-1][0])}"
    await guard(store.redis.delete(index))
    return len(jobs)


#: Key families of the integrations under a partition's tag, per project:
#: ``lg`` (the LangGraph saver's indexes), ``es`` (the eventsourcing recorders').
INTEGRATION_FAMILIES = ("lg", "es")


async def erase_integration_keys(store: EventStore, partition: int, project: str) -> int:
    """Remove the integrations' own index keys of the project; return how many."""
    removed = 0
    for family in INTEGRATION_FAMILIES:
        pattern = f"{store.keys.tag(partition)}:{family}:{project}:*"
        doomed = [key async for key in store.redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(doomed), DELETE_CHUNK):
            removed += int(await guard(store.redis.delete(*doomed[i:i + DELETE_CHUNK])))
    return removed


async def rewrite_aof(store: EventStore, within: float = 300.0) -> int:
    """Make every node's append-only file forget deleted entries; return how many
    rewrites ran.

    A stream keeps XDEL'd entries in its listpacks until the node is rewritten,
    and an RDB preamble (the AOF base file's default format) copies them as they
    are; so the preamble is switched off and each node rewrites its AOF as
    commands, after its replicas have received the deletions.
    """
    nodes, own = await every_server(store.redis)
    try:
        await _replicas_caught_up(nodes, within)
        # The nodes rewrite at once (each forks its own child): a deletion on a
        # six-node cluster waits for the slowest rewrite, not for the sum of them.
        return sum(await asyncio.gather(*(_rewrite_one(node, within) for node in nodes)))
    finally:
        if own:
            for node in nodes:
                await node.aclose()


async def _replicas_caught_up(nodes: list[aioredis.Redis], within: float) -> None:
    offsets: dict[tuple[str, int], int] = {}
    replicas = []
    for node in nodes:
        info = await guard(node.info("replication"))
        if info.get("role") == "master":
            kw = node.connection_pool.connection_kwargs
            offsets[(str(kw.get("host")), int(kw.get("port", 0)))] = int(
                info.get("master_repl_offset", 0))
        else:
            replicas.append(node)
    deadline = time.monotonic() + within
    for node in replicas:
        while True:
            info = await guard(node.info("replication"))
            want = offsets.get((str(info.get("master_host")), int(info.get("master_port", 0))))
            if want is None or int(info.get("slave_repl_offset", 0)) >= want:
                break
            if time.monotonic() > deadline:
                raise StoreUnavailable("a replica did not receive the erasure in time")
            await asyncio.sleep(0.05)


async def _rewrite_one(node: aioredis.Redis, within: float) -> int:
    info = await guard(node.info("persistence"))
    if not int(info.get("aof_enabled", 0)):
        return 0
    try:
        await node.config_set("aof-use-rdb-preamble", "no")
    except rexc.ResponseError:  # CONFIG renamed or disabled: the operator's choice
        pass
    deadline = time.monotonic() + within
    while True:  # a rewrite already running started before the deletions: wait it out
        info = await guard(node.info("persistence"))
        before = int(info.get("aof_rewrites", 0))
        if not int(info.get("aof_rewrite_in_progress", 0)):
            try:
                await node.bgrewriteaof()
                break
            except rexc.ResponseError:
                pass
        if time.monotonic() > deadline:
            raise StoreUnavailable("the append-only file rewrite did not start in time")
        await asyncio.sleep(0.01)
    while True:
        info = await guard(node.info("persistence"))
        if (int(info.get("aof_rewrites", 0)) > before
                and not int(info.get("aof_rewrite_in_progress", 0))
                and not int(info.get("aof_rewrite_scheduled", 0))):
            if info.get("aof_last_bgrewrite_status") != "ok":
                raise StoreUnavailable("the append-only file rewrite failed on a node")
            return 1
        if time.monotonic() > deadline:
            raise StoreUnavailable("the append-only file rewrite did not finish in time")
        await asyncio.sleep(0.01)
