"""Scale-out: append throughput by partitions, one server vs a 3-master cluster; memory per event.

In the same run, on one Valkey and on a 3-master Valkey cluster formed from the
bundled binary (no replicas; every node with ``appendonly yes``,
``appendfsync always``, loopback TCP for both):

- raw redis-py XADD pipelined (1,000 a batch, spread over the partitions'
  keys): the ceiling;
- chatlog: 256 concurrent ``append_one`` calls (group-committed), over 64
  projects, so the events spread over the partitions;

each with 1, 4 and 16 partitions. Then, on one server, Redis memory per stored
message event: ``used_memory`` before and after 100,000 message events
(~200-character content and metadata, 1,000 threads of 100 messages; 10,000
with ``--quick``), and ``MEMORY USAGE`` of the stream alone. Client-supplied
event ids cost an extra key per event while the idempotency window lasts:
measured too, on a tenth of the events.

The client is one Python process; on a small machine it, not the servers, may
be the limit — the per-node server CPU is printed beside each figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from _common import (
    bench_args,
    emit,
    format_table,
    message_data,
    metric,
    run_for,
    scratch_dir,
)
from chatlog.events import NewEvent
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.codec import encode_body
from chatlog.identity import normalize_project_id
from chatlog.testing import LocalCluster

PARTITIONS = (1, 4, 16)
CONCURRENCY = 256
PIPELINE = 1000
PROJECTS = [normalize_project_id(f"bench-project-{k}") for k in range(64)]
WARMUP = 0.2


def event(i: int, *, with_id: bool = False, thread_no: int | None = None) -> NewEvent:
    """Message ``i``: project ``i % 64``, one of 1,000 threads (or thread ``thread_no``)."""
    k = i % 1000 if thread_no is None else thread_no
    project = PROJECTS[k % len(PROJECTS)]
    thread = f"thread-{uuid.UUID(int=k + 1)}"
    return NewEvent.of(
        message_data(i, thread), project=project.key, project_name=project.display,
        aggregate_type="thread", aggregate_id=thread,
        event_id=uuid.uuid4() if with_id else None,
    )


@contextlib.contextmanager
def deployments(base: Path) -> Iterator[dict[str, Any]]:
    """One server and a 3-master cluster, both stopped (by pid) on exit."""
    single = EmbeddedValkey(base / "single", port=0).start()
    cluster = LocalCluster(base / "cluster", masters=3, replicas=0, fsync="always")
    try:
        cluster.start()
        yield {"one server": (single.url, [single]), "3-master cluster": (cluster.url,
                                                                         cluster.nodes)}
    finally:
        cluster.stop()
        single.stop()


def flush(nodes: list[EmbeddedValkey]) -> None:
    for node in nodes:
        with redis.Redis(host="127.0.0.1", port=int(node.port or 0)) as r:
            r.execute_command("FLUSHALL", "SYNC")


def cpu(nodes: list[EmbeddedValkey]) -> float:
    total = 0.0
    for node in nodes:
        with redis.Redis(host="127.0.0.1", port=int(node.port or 0)) as r:
            info = r.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def measure_raw(url: str, partitions: int, duration: float) -> float:
    store = await EventStore.open(url, partitions=partitions, prefix=f"r{uuid.uuid4().hex[:6]}")
    try:
        client: Any = store.redis
        ev = event(0)
        fields = {"i": str(ev.id), "t": ev.type, "a": ev.aggregate, "v": "1",
                  "b": encode_body(ev)}
        keys = [store.keys.log(p) for p in range(partitions)]

        async def step() -> int:
            pipe = client.pipeline(transaction=False)
            for k in range(PIPELINE):
                pipe.xadd(keys[k % partitions], fields)
            await pipe.execute()
            return PIPELINE

        await run_for(WARMUP, step)
        return (await run_for(duration, step)).per_s
    finally:
        await store.close()


async def measure_chatlog(url: str, partitions: int, duration: float) -> float:
    store = await EventStore.open(url, partitions=partitions, prefix=f"c{uuid.uuid4().hex[:6]}")
    counter = iter(range(10**9))
    try:

        async def step() -> int:
            await asyncio.gather(*(store.append_one(event(next(counter)))
                                   for _ in range(CONCURRENCY)))
            return CONCURRENCY

        await run_for(WARMUP, step)
        return (await run_for(duration, step)).per_s
    finally:
        await store.close()


async def memory_per_event(url: str, n: int, *, with_id: bool) -> dict[str, float]:
    """Bytes of Redis memory per stored message event, after ``n`` events."""
    r = aioredis.from_url(url)
    store = await EventStore.open(url, partitions=1, prefix=f"m{uuid.uuid4().hex[:6]}")
    try:
        await r.execute_command("FLUSHALL", "SYNC")  # not lazily: before must be settled
        await store.ensure_meta()
        before = int((await r.info("memory"))["used_memory"])
        threads = max(n // 100, 1)
        sem = asyncio.Semaphore(16)

        async def thread_batch(t: int) -> None:
            async with sem:
                await store.append([event(k, with_id=with_id, thread_no=t) for k in range(100)])

        await asyncio.gather(*(thread_batch(t) for t in range(threads)))
        length = int(await r.xlen(store.keys.log(0)))
        after = int((await r.info("memory"))["used_memory"])
        stream = int(await r.memory_usage(store.keys.log(0), samples=0) or 0)
        return {"events": length, "used_memory": (after - before) / length,
                "stream": stream / length}
    finally:
        await store.close()
        await r.aclose()


async def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    n_memory = 10_000 if args.quick else 100_000
    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    with scratch_dir("scale") as base, deployments(base) as deps:
        for name, (url, nodes) in deps.items():
            for p in PARTITIONS:
                raw_runs, log_runs, cpu_runs = [], [], []
                for _ in range(args.reps):
                    flush(nodes)
                    raw_runs.append(await measure_raw(url, p, args.duration))
                    flush(nodes)
                    before = cpu(nodes)
                    log_runs.append(await measure_chatlog(url, p, args.duration))
                    cpu_runs.append((cpu(nodes) - before) / (args.duration + WARMUP))
                raw = metric(f"{name}, P={p}: raw XADD pipelined x{PIPELINE}", raw_runs,
                             "events/s")
                log = metric(f"{name}, P={p}: chatlog {CONCURRENCY} concurrent append_one",
                             log_runs, "events/s", ratio=round(max(log_runs) / max(raw_runs), 2),
                             ratio_to=raw["metric"])
                results += [raw, log]
                server_cpu = statistics.median(cpu_runs)
                per_event = server_cpu / statistics.median(log_runs) * 1e6
                results.append(metric(f"{name}, P={p}: server CPU per chatlog append",
                                      [per_event], "us", higher_is_better=False))
                rows.append([name, p, raw["value"], log["value"], log["ratio"],
                             round(server_cpu, 2), round(per_event, 1)])
                print(f"  {name:>16} P={p:<3} raw {raw['value']:>9,.0f}/s  chatlog "
                      f"{log['value']:>8,.0f}/s  server CPU {server_cpu:.2f} s/s "
                      f"({per_event:.1f} us/event)", flush=True)
        single_url = deps["one server"][0]
        mem = await memory_per_event(single_url, n_memory, with_id=False)
        mem_id = await memory_per_event(single_url, max(n_memory // 10, 1000), with_id=True)
    results.append(metric(f"memory per message event at {mem['events']:,} events (used_memory)",
                          [mem["used_memory"]], "bytes", higher_is_better=False))
    results.append(metric("memory per message event, stream only (MEMORY USAGE)",
                          [mem["stream"]], "bytes", higher_is_better=False))
    results.append(metric("memory per message event with a client event id, in the window",
                          [mem_id["used_memory"]], "bytes", higher_is_better=False))
    print("\nappend throughput (best of reps, events/s)")
    print(format_table(["deployment", "partitions", "raw XADD pipelined", "chatlog concurrent",
                        "ratio", "server CPU s/s", "server us/event"], rows))
    print(f"\nmemory per stored message event at {mem['events']:,} events: "
          f"{mem['used_memory']:.0f} bytes (used_memory delta; the stream alone "
          f"{mem['stream']:.0f}); with a client event id in the window: "
          f"{mem_id['used_memory']:.0f} bytes")
    emit("scale", results, args, memory=mem, memory_with_ids=mem_id)


if __name__ == "__main__":
    asyncio.run(main())
