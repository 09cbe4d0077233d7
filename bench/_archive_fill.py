"""The fill of ``bench_archive.py``: append N message events through chatlog's append
path while an archiver runs in a second process, as a ``chatlog serve`` node runs it.

The appends are ``EventStore.append`` calls (the store's group-committed path),
``batch`` events of one thread each, from ``concurrency`` concurrent callers
spread over 1,000 threads; so a group commit carries hundreds of events of many
aggregates in one ``APPEND_MANY`` call, as a busy service's would. With
``batch`` 1 they are ``append_one`` calls.

The events are built cheaply: their data come from a pool of 1,000 validated
``message.appended`` payloads (~200 characters of content each), and each event
gets a fresh id; building a pydantic model per event cost more CPU than the
append itself, and it is the load generator, not the log, that did it.

Memory is sampled against events appended; progress is printed every 5 %.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _common import PROJECT, ROOT, message_data, thread_ids
from chatlog.events import SCHEMA_VERSION, MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.identity import random_uuid

THREADS = thread_ids(1000)
#: Concurrent appending callers (each one append of ``batch`` events at a time).
CONCURRENCY = 256
#: Events per append (one thread's) during the fill, by default.
BATCH = 10

ARCHIVER = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from chatlog.eventstore import EventStore
    from chatlog.eventstore.archive import Archive
    from chatlog.eventstore.archiver import Archiver, HotWindow

    async def main(url, archive_dir, hot, stop_file, outcome_window):
        store = await EventStore.open(url, prefix="bench", outcome_window=outcome_window)
        archiver = Archiver(store, Archive.open(archive_dir), HotWindow(hot, 0, 0),
                            segment_events=100_000, lease_ttl=60)
        wall = cpu = 0.0
        archived = passes = 0
        while True:
            stopping = os.path.exists(stop_file)
            t0, c0 = time.perf_counter(), time.process_time()
            (r,) = await archiver.run_pass()
            if r.archived:
                wall += time.perf_counter() - t0
                cpu += time.process_time() - c0
                archived += r.archived
                passes += 1
            if stopping:
                break
            if not r.archived:  # as chatlog serve: after a pass that archived, the next at once
                await asyncio.sleep(0.2)
        await store.close()
        print(json.dumps({"archived": archived, "wall_s": wall, "cpu_s": cpu,
                          "passes": passes}), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4],
                     float(sys.argv[5])))
""")


class EventMaker:
    """``message.appended`` events of the bench project: a fresh id each, data from a
    pool of validated payloads (the thread id set to the event's thread)."""

    def __init__(self, pool: int = 1000) -> None:
        self.pool = [message_data(k, "thread-x").model_dump(mode="json") for k in range(pool)]
        self.type = MessageAppended.event_type

    def __call__(self, i: int, thread: str) -> NewEvent:
        return NewEvent.model_construct(
            id=random_uuid(), id_supplied=False, type=self.type, project=PROJECT.key,
            project_name=PROJECT.display, aggregate_type="thread", aggregate_id=thread,
            data={**self.pool[i % len(self.pool)], "thread_id": thread},
            schema_version=SCHEMA_VERSION, blob=None,
        )


async def fill(url: str, n: int, work: Path, hot: int, *, batch: int = BATCH,
               concurrency: int = CONCURRENCY, progress: bool = True,
               outcome_window: float = 600.0) -> dict[str, Any]:
    """Append ``n`` events with the archiver process running (hot window ``hot``);
    memory samples (events appended, used_memory), rates and the archiver's figures.
    ``outcome_window``: the store's (seconds; shorter in a probe, so that the
    generations of the server-made ids' records and filters roll over sooner)."""
    stop_file = work / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    archiver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ARCHIVER, url, str(work / "archive"), str(hot), str(stop_file),
        str(outcome_window), stdout=subprocess.PIPE, env=env)
    store = await EventStore.open(url, prefix="bench", outcome_window=outcome_window)
    r = aioredis.from_url(url)
    make = EventMaker()
    samples: list[tuple[int, int]] = [(0, int((await r.info("memory"))["used_memory"]))]
    held = 0  # the most events Redis held at a sample
    #: What the memory is made of at each sample (:func:`breakdown`), so that a peak is
    #: explained: events appended, used_memory, its parts, events held, filter bytes.
    detail: list[dict[str, int]] = []
    appended = 0
    next_i = 0

    async def appender() -> None:
        nonlocal appended, next_i
        while next_i < n:
            i = next_i
            if batch <= 1:
                next_i += 1
                await store.append_one(make(i, THREADS[i % len(THREADS)]))
                appended += 1
                continue
            size = min(batch, n - i)  # one thread's `size` events in one append
            next_i += size
            thread = THREADS[(i // batch) % len(THREADS)]
            await store.append([make(j, thread) for j in range(i, i + size)])
            appended += size

    cpu0, t0 = time.process_time(), time.perf_counter()

    async def sampler() -> None:
        nonlocal held
        last = shown = 0
        while appended < n:
            if appended - last >= n // 200:
                last = appended
                parts = await breakdown(r, store.keys.log(0))
                samples.append((appended, parts["used_memory"]))
                held = max(held, parts["held"])
                detail.append({"appended": appended, **parts})
            if progress and appended - shown >= n // 20:
                shown = appended
                took = time.perf_counter() - t0
                hot_len = int(await r.xlen(store.keys.log(0)))
                recent = detail[-1] if detail else {}
                print(f"  {appended:,} events in {took:,.0f} s ({appended / took:,.0f}/s; "
                      f"Redis holds {hot_len:,}, used_memory "
                      f"{samples[-1][1] / 2**20:,.0f} MiB: filter "
                      f"{recent.get('filter_bytes', 0) / 2**20:,.1f}, clients "
                      f"{recent.get('mem_clients_normal', 0) / 2**20:,.1f})", flush=True)
            await asyncio.sleep(0.05)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    append_s, append_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await sampling
    samples.append((appended, int((await r.info("memory"))["used_memory"])))
    stop_file.touch()
    out, _ = await archiver.communicate()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    samples.append((appended, int((await r.info("memory"))["used_memory"])))
    hot_len = int(await r.xlen(store.keys.log(0)))
    await r.aclose()
    await store.close()
    return {"samples": samples, "append_s": append_s, "append_cpu_s": append_cpu,
            "archiver": stats, "hot_len": hot_len, "n": appended, "max_held": held,
            "detail": detail}


#: INFO memory fields a sample records (those the server reports).
MEMORY_FIELDS = ("used_memory", "used_memory_dataset", "used_memory_overhead",
                 "mem_clients_normal", "mem_aof_buffer", "used_memory_scripts",
                 "used_memory_vm_eval", "used_memory_lua", "mem_replication_backlog")


async def breakdown(r: aioredis.Redis, log_key: str) -> dict[str, int]:
    """What Redis memory is made of now: the INFO memory fields above, the events the
    stream holds and its bytes (MEMORY USAGE), the archived ids' filter bytes, and the
    largest client's buffers (query buffer, output memory, total)."""
    info = await r.info("memory")
    parts = {k: int(info[k]) for k in MEMORY_FIELDS if k in info}
    parts["held"] = int(await r.xlen(log_key))
    parts["stream_bytes"] = int(await r.memory_usage(log_key, samples=0) or 0)
    parts["filter_bytes"] = await filter_bytes(r)
    clients = await r.client_list()
    top = max(clients, key=lambda c: int(c.get("tot-mem", 0)), default={})
    parts["client_max_tot_mem"] = int(top.get("tot-mem", 0))
    parts["client_max_qbuf"] = max((int(c.get("qbuf", 0)) for c in clients), default=0)
    parts["client_max_omem"] = max((int(c.get("omem", 0)) for c in clients), default=0)
    return parts


def peak_breakdown(detail: list[dict[str, int]]) -> str:
    """The sample with the most used_memory, its parts in MiB, in one line."""
    if not detail:
        return "no samples"
    d = max(detail, key=lambda x: x["used_memory"])
    mib = {k: v / 2**20 for k, v in d.items()}
    return (f"peak at {d['appended']:,} events: used_memory {mib['used_memory']:.1f} MiB = "
            f"dataset {mib.get('used_memory_dataset', 0):.1f} (stream "
            f"{mib['stream_bytes']:.1f} for {d['held']:,} events, archived ids' filter "
            f"{mib['filter_bytes']:.1f}) + overhead {mib.get('used_memory_overhead', 0):.1f} "
            f"(clients {mib.get('mem_clients_normal', 0):.1f}: largest query buffer "
            f"{mib['client_max_qbuf']:.1f}, output {mib['client_max_omem']:.1f}; AOF buffer "
            f"{mib.get('mem_aof_buffer', 0):.1f}; scripts "
            f"{mib.get('used_memory_scripts', 0):.1f})")


async def filter_bytes(r: aioredis.Redis) -> int:
    """Bytes of the pieces of the archived ids' filter (``<tag>:idf:...`` strings)."""
    total = 0
    async for key in r.scan_iter(match="*:idf:*", count=1000):
        total += int(await r.strlen(key))
    return total


async def backlog_pass(url: str, archive_dir: str, backlog: int = 100_000) -> dict[str, Any]:
    """The archiver's own pace, apart from the appends it shares the machine with
    during the fill: after the fill (nothing else running), one pass that seals
    ``backlog`` events of the hot tail (at most all but 30,000), in this process,
    after a warm-up pass of 20,000 (imports, first segment). Events sealed per
    second of wall time, and this process's CPU per event (Valkey's not included)."""
    from chatlog.eventstore.archive import Archive
    from chatlog.eventstore.archiver import Archiver, HotWindow

    store = await EventStore.open(url, prefix="bench")
    try:
        held = int(await store.redis.xlen(store.keys.log(0)))
        backlog = min(backlog, held - 30_000)
        if backlog < 10_000:
            return {"archived": 0, "wall_s": 0.0, "cpu_s": 0.0}

        async def one_pass(window: int) -> tuple[int, float, float]:
            archiver = Archiver(store, Archive.open(archive_dir), HotWindow(window, 0, 0),
                                segment_events=100_000, lease_ttl=60)
            t0, c0 = time.perf_counter(), time.process_time()
            (r,) = await archiver.run_pass()
            return r.archived, time.perf_counter() - t0, time.process_time() - c0

        await one_pass(held - 20_000)  # a margin of at most 10,000 triggers the seal
        archived, wall, cpu = await one_pass(held - 20_000 - backlog)
        return {"archived": archived, "wall_s": wall, "cpu_s": cpu}
    finally:
        await store.close()
