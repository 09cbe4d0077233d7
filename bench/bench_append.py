"""Appends/s to the event log, beside raw XADD ceilings and the eventsourcing/SQLite peer.

All on one fresh Valkey with the embedded default's settings (appendonly yes,
appendfsync always, unix socket), in the same run:

- ceiling 1: raw redis-py XADD of the same entry, awaited one at a time;
- ceiling 2: raw redis-py XADD pipelined, 1,000 a batch;
- chatlog ``await store.append_one(ev)`` one at a time (goal: ≥ 0.5x ceiling 1);
- chatlog ``store.append([...100 events of one thread...])`` (goal: ≥ 0.5x ceiling 2);
- chatlog 256 concurrent ``append_one`` calls, group-committed (goal: ≥ 0.5x ceiling 2);
- the peer: the ``eventsourcing`` library's SQLite module, one event per save and
  100 events per save.

The chatlog figures include building each event (``MessageAppended`` and
``NewEvent.of``), as a caller has to; the raw ceilings send a prebuilt entry.
Events go round-robin to 100 threads of one project.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import statistics
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _common import (
    PROJECT,
    Rate,
    bench_args,
    emit,
    format_table,
    metric,
    print_table,
    reset_server,
    rss_mb,
    run_for,
    run_for_sync,
    sample_content,
    scratch_dir,
    server_cpu_seconds,
    server_info,
    thread_ids,
    valkey_server,
)
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.codec import encode_body

THREADS = thread_ids(100)
BATCH = 100  # events per chatlog / peer batch (one thread)
PIPELINE = 1000  # XADDs per raw pipeline
CONCURRENCY = 256  # append_one calls in flight
WARMUP = 0.1  # seconds of untimed warm-up before each measurement

RAW_AWAITED = "raw XADD, awaited"
RAW_PIPELINED = f"raw XADD, pipelined x{PIPELINE}"
SINGLE = "chatlog append_one, awaited"
BATCHED = f"chatlog append, batches of {BATCH}"
CONCURRENT = f"chatlog append_one, {CONCURRENCY} concurrent"
PEER_SINGLE = "peer eventsourcing+SQLite, 1/save"
PEER_BATCHED = f"peer eventsourcing+SQLite, {BATCH}/save"


@functools.lru_cache(maxsize=64)
def _content(k: int) -> str:
    return sample_content(200, seed=k)


def _metadata(i: int) -> dict[str, Any]:
    return {"model": "gpt-bench-1", "tokens": 48 + i % 50, "run_id": "run-0042"}


def chat_event(i: int) -> NewEvent:
    """Event number ``i``: a ~200-character message in thread ``i % 100``."""
    thread = THREADS[i % len(THREADS)]
    return NewEvent.of(
        MessageAppended(
            thread_id=thread,
            role="assistant" if i % 2 else "user",
            content=_content(i % 64),
            metadata=_metadata(i),
        ),
        project=PROJECT.key,
        project_name=PROJECT.display,
        aggregate_type="thread",
        aggregate_id=thread,
    )


def raw_fields() -> dict[str, bytes | str]:
    """The stream entry chatlog writes for one event (what the raw ceilings XADD)."""
    ev = chat_event(0)
    return {"i": str(ev.id), "t": ev.type, "a": ev.aggregate, "v": "1", "b": encode_body(ev)}


# -- measurements (each on an emptied server, warmed up first) ---------------------


async def _timed(url: str, duration: float, step: Any) -> Rate:
    """Warm up, then run ``step`` for ``duration``, noting the server's CPU too."""
    await run_for(WARMUP, step)
    server_cpu = await server_cpu_seconds(url)
    rate = await run_for(duration, step)
    return dataclasses.replace(
        rate, server_cpu_s=await server_cpu_seconds(url) - server_cpu
    )


async def raw_awaited(url: str, duration: float) -> Rate:
    r = aioredis.from_url(url)  # plain redis-py (with hiredis), default options
    fields = raw_fields()
    try:

        async def step() -> int:
            await r.xadd("bench:raw", fields)  # type: ignore[arg-type]
            return 1

        return await _timed(url, duration, step)
    finally:
        await r.aclose()


async def raw_pipelined(url: str, duration: float) -> Rate:
    r = aioredis.from_url(url)
    fields = raw_fields()
    try:

        async def step() -> int:
            pipe = r.pipeline(transaction=False)
            for _ in range(PIPELINE):
                pipe.xadd("bench:raw", fields)  # type: ignore[arg-type]
            await pipe.execute()
            return PIPELINE

        return await _timed(url, duration, step)
    finally:
        await r.aclose()


async def chatlog_single(url: str, duration: float) -> Rate:
    store = await EventStore.open(url)
    i = 0
    try:

        async def step() -> int:
            nonlocal i
            i += 1
            await store.append_one(chat_event(i))
            return 1

        return await _timed(url, duration, step)
    finally:
        await store.close()


async def chatlog_batched(url: str, duration: float) -> Rate:
    store = await EventStore.open(url)
    n = 0
    try:

        async def step() -> int:
            nonlocal n
            n += 1
            # 100 events of one thread: i ≡ n (mod 100) picks thread n % 100.
            await store.append([chat_event(n + k * len(THREADS)) for k in range(BATCH)])
            return BATCH

        return await _timed(url, duration, step)
    finally:
        await store.close()


async def chatlog_concurrent(url: str, duration: float) -> Rate:
    store = await EventStore.open(url)
    counter = iter(range(1 << 62))

    async def burst(seconds: float) -> Rate:
        server_cpu = await server_cpu_seconds(url)
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        counts = [0] * CONCURRENCY

        async def worker(w: int) -> None:
            while time.perf_counter() < deadline:
                await store.append_one(chat_event(next(counter)))
                counts[w] += 1

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        wall = time.perf_counter() - start
        return Rate(sum(counts), wall, time.process_time() - cpu,
                    await server_cpu_seconds(url) - server_cpu)

    try:
        await burst(WARMUP)
        return await burst(duration)
    finally:
        await store.close()


@functools.cache
def _peer_classes() -> tuple[type[Any], type[Any]]:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Thread(Aggregate):  # type: ignore[misc]
        @event("Started")  # type: ignore[untyped-decorator]
        def __init__(self, project_name: str, thread_id: str) -> None:
            self.project_name = project_name
            self.thread_id = thread_id
            self.messages = 0

        @event("MessageAppended")  # type: ignore[untyped-decorator]
        def append_message(self, role: str, content: str, metadata: dict[str, Any]) -> None:
            self.messages += 1

    return Application, Thread


def peer(db: Path, duration: float, per_save: int) -> Rate:
    """The same workload through eventsourcing's SQLite module (WAL, synchronous=FULL)."""
    application, thread_cls = _peer_classes()
    app = application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)}
    )
    threads = [thread_cls(PROJECT.display, t) for t in THREADS]
    app.save(*threads)
    i = 0

    def step() -> int:
        nonlocal i
        i += 1
        agg = threads[i % len(threads)]
        for k in range(per_save):
            j = i + k * len(THREADS)
            agg.append_message(
                role="assistant" if j % 2 else "user", content=_content(j % 64),
                metadata=_metadata(j),
            )
        app.save(agg)
        return per_save

    try:
        run_for_sync(WARMUP, step)
        return run_for_sync(duration, step)
    finally:
        app.close()


# -- the run --------------------------------------------------------------------


def main() -> int:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "append benchmark")
    duration = args.duration
    modes = [
        (RAW_AWAITED, raw_awaited),
        (RAW_PIPELINED, raw_pipelined),
        (SINGLE, chatlog_single),
        (BATCHED, chatlog_batched),
        (CONCURRENT, chatlog_concurrent),
    ]
    rates: dict[str, list[Rate]] = {
        name: [] for name in [*(m for m, _ in modes), PEER_SINGLE, PEER_BATCHED]
    }
    with valkey_server() as server, scratch_dir("peer") as tmp:
        assert server.pid is not None
        print(f"Valkey pid {server.pid} at {server.url}; {args.reps} reps x {duration:g} s "
              "per measurement", flush=True)
        server_rss = 0.0
        for rep in range(args.reps):
            line = []
            for name, fn in modes:
                asyncio.run(reset_server(server.url))
                rate = asyncio.run(fn(server.url, duration))
                server_rss = max(server_rss, rss_mb(server.pid))
                rates[name].append(rate)
                line.append(f"{name}: {rate.per_s:,.0f}/s")
            for name, per_save in ((PEER_SINGLE, 1), (PEER_BATCHED, BATCH)):
                rate = peer(tmp / f"peer-{rep}-{per_save}.db", duration, per_save)
                for f in tmp.glob(f"peer-{rep}-{per_save}.db*"):
                    os.unlink(f)
                rates[name].append(rate)
                line.append(f"{name}: {rate.per_s:,.0f}/s")
            print(f"rep {rep + 1}: " + "; ".join(line), flush=True)
        info = asyncio.run(server_info(server.url))
        info["peak_rss_mb"] = server_rss

    runs = {name: [r.per_s for r in rs] for name, rs in rates.items()}
    cpu = {
        name: (
            round(statistics.median(r.cpu_us_per_op for r in rs), 1),
            round(statistics.median(r.server_cpu_us_per_op for r in rs), 1),
        )
        for name, rs in rates.items()
    }
    results = build_results(runs)
    for row in results:
        row["client_cpu_us"], row["server_cpu_us"] = cpu[row["metric"]]
    print_table("Appends/s on the embedded default (appendfsync always, unix socket)", results)
    print("\nCPU per event, median of the reps (steadier than wall time on a busy machine;"
          " the peer's SQLite work is in the client column)")
    print(format_table(
        ["mode", "client us/event", "server us/event"],
        [[name, c, s or None] for name, (c, s) in cpu.items()],
    ))
    vs = [
        [SINGLE, PEER_SINGLE, _ratio(runs[SINGLE], runs[PEER_SINGLE])],
        [BATCHED, PEER_BATCHED, _ratio(runs[BATCHED], runs[PEER_BATCHED])],
        [CONCURRENT, PEER_BATCHED, _ratio(runs[CONCURRENT], runs[PEER_BATCHED])],
    ]
    print("\nchatlog beside the peer (best / best)")
    print(format_table(["chatlog", "peer", "x peer"], vs), flush=True)
    emit("append", results, args, server=info, bench_rss_mb=rss_mb(),
         duration_s=duration)
    return 0


def _ratio(a: list[float], b: list[float]) -> float:
    return round(max(a) / max(b), 3) if max(b) > 0 else 0.0


def build_results(runs: dict[str, list[float]]) -> list[dict[str, Any]]:
    def goal_row(name: str, ceiling: str, goal: float, goal_text: str) -> dict[str, Any]:
        ratio = _ratio(runs[name], runs[ceiling])
        median_ratio = round(
            statistics.median(runs[name]) / max(statistics.median(runs[ceiling]), 1e-9), 3
        )
        return metric(
            name, runs[name], "events/s", ratio=ratio, ratio_median=median_ratio,
            ratio_to=ceiling, goal=goal_text, goal_met=ratio >= goal,
        )

    return [
        metric(RAW_AWAITED, runs[RAW_AWAITED], "events/s", role="ceiling 1"),
        metric(RAW_PIPELINED, runs[RAW_PIPELINED], "events/s", role="ceiling 2"),
        goal_row(SINGLE, RAW_AWAITED, 0.5, ">= 0.5x ceiling 1"),
        goal_row(BATCHED, RAW_PIPELINED, 0.5, ">= 0.5x ceiling 2"),
        goal_row(CONCURRENT, RAW_PIPELINED, 0.5, ">= 0.5x ceiling 2"),
        metric(PEER_SINGLE, runs[PEER_SINGLE], "events/s", role="peer",
               ratio=_ratio(runs[PEER_SINGLE], runs[RAW_AWAITED]), ratio_to=RAW_AWAITED),
        metric(PEER_BATCHED, runs[PEER_BATCHED], "events/s", role="peer",
               ratio=_ratio(runs[PEER_BATCHED], runs[RAW_PIPELINED]), ratio_to=RAW_PIPELINED),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
