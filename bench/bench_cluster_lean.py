"""What the lean connection would give on a cluster: 256 concurrent XADDs, redis-py's
RedisCluster beside lean connections routed per node, and chatlog's append_one there.

On a 3-master LocalCluster (fsync always, loopback TCP), 16 partitions' streams,
in the same run: raw ``XADD`` through redis-py's ``RedisCluster`` (what the
store's cluster path is built on); raw ``XADD`` over one lean connection per
master, each key sent to the node that owns its slot (the ceiling a lean
cluster path could reach, without MOVED/ASK handling or rediscovery); and
chatlog ``append_one`` on the cluster (redis-py, per-shard group commits).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from _common import bench_args, emit, metric, print_table, scratch_dir
from bench_append import chat_event, raw_fields
from chatlog.eventstore import EventStore
from chatlog.eventstore.lean import LeanConnection
from chatlog.testing import LocalCluster

CONCURRENCY = 256
KEYS = [f"bench:{{p{i}}}:log" for i in range(16)]
REDIS_PY = "raw XADD, redis-py RedisCluster"
LEAN = "raw XADD, lean connection per master"
CHATLOG = "chatlog append_one on the cluster"


async def _rate(seconds: float, step: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """(operations/s, client CPU us per operation) of CONCURRENCY workers calling step."""
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    done = [0]

    async def worker(k: int) -> None:
        while time.perf_counter() < end:
            await step(k)
            done[0] += 1

    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return done[0] / (time.perf_counter() - start), (time.process_time() - cpu) / done[0] * 1e6


async def measure(url: str, seconds: float, reps: int) -> dict[str, list[tuple[float, float]]]:
    fields = raw_fields()
    flat = [x for kv in fields.items() for x in kv]
    seed = url.removeprefix("redis+cluster://").split(",")[0]
    rc = RedisCluster.from_url(f"redis://{seed}", max_connections=4 * CONCURRENCY)
    await rc.initialize()
    conns: dict[tuple[str, int], LeanConnection] = {}
    routed = []
    for key in KEYS:
        node = rc.get_node_from_key(key)
        where = (str(node.host), int(node.port))
        routed.append(conns.setdefault(where, LeanConnection(host=where[0], port=where[1])))
    store = await EventStore.open(url, partitions=len(KEYS))
    n = [0]

    async def chatlog(_: int) -> None:
        n[0] += 1
        await store.append_one(chat_event(n[0]))

    steps: dict[str, Callable[[int], Awaitable[Any]]] = {
        REDIS_PY: lambda k: rc.xadd(KEYS[k % 16], fields),  # type: ignore[arg-type]
        LEAN: lambda k: routed[k % 16].execute("XADD", KEYS[k % 16], "*", *flat),
        CHATLOG: chatlog,
    }
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    try:
        for step in steps.values():  # warm up
            await _rate(0.1, step)
        for _ in range(reps):  # the modes in turns: the machine's load hits them alike
            for name, step in steps.items():
                out[name].append(await _rate(seconds, step))
    finally:
        await store.close()
        await rc.aclose()
        for conn in conns.values():
            await conn.close()
    return out


def main() -> int:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "cluster lean")
    with scratch_dir("cluster") as tmp:
        cluster = LocalCluster(tmp, masters=3).start()
        try:
            runs = asyncio.run(measure(cluster.url, args.duration, args.reps))
        finally:
            cluster.stop()
    rates = {name: [r for r, _ in v] for name, v in runs.items()}
    per_rep = [a / b for a, b in zip(rates[LEAN], rates[REDIS_PY], strict=True) if b > 0]
    results = [
        metric(name, rates[name], "appends/s" if name == CHATLOG else "XADD/s",
               client_cpu_us=round(statistics.median(c for _, c in runs[name]), 1))
        for name in runs
    ]
    results[1]["ratio"] = round(statistics.median(per_rep), 3)
    results[1]["ratio_best"] = round(max(per_rep), 3)
    results[1]["ratio_to"] = REDIS_PY
    print_table(f"{CONCURRENCY} concurrent writes on a 3-master cluster", results)
    emit("cluster_lean", results, args, concurrency=CONCURRENCY)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
