"""Wake-up latency of orchestrator waits, beside raw XREAD BLOCK through redis-py.

All on one fresh Valkey with the embedded default's settings (appendonly yes,
appendfsync always, unix socket), in the same run:

- raw: a redis-py client blocked in ``XREAD BLOCK``; another client XADDs one
  entry; latency = from just before the XADD is sent to the reader resuming;
- chatlog, one waiter: ``await orchestrator.wait_for_start(...)`` blocked; the
  ``workflow.started`` event is appended (``store.append`` with
  ``expected_version``, what ``start_workflow`` does after its read);
  latency = from just before that append to the waiter resuming.
  Goal: p99 within 2 ms of raw;
- chatlog, 10,000 waiters (2,000 with ``--quick``) blocked on as many
  workflows at once (all served by one tailer, one connection): latency of
  single wake-ups among them (goal: p99 < 50 ms), the time to wake all of them
  at once (a burst of appends), and the process memory the waits take.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from _common import (
    PROJECT,
    bench_args,
    emit,
    metric,
    percentiles,
    print_table,
    reset_server,
    rss_mb,
    scratch_dir,
    valkey_server,
)
from chatlog.events import NewEvent, WorkflowStarted
from chatlog.eventstore import EventStore
from chatlog.orchestrator import Orchestrator
from chatlog.settings import Settings

WARMUP = 20


def _started(wid: str) -> NewEvent:
    return NewEvent.of(WorkflowStarted(), project=PROJECT.key, project_name=PROJECT.display,
                       aggregate_type="workflow", aggregate_id=wid)


async def raw_wakeups(url: str, samples: int) -> list[float]:
    """XADD by one client -> XREAD BLOCK of another resumes; seconds each."""
    reader = aioredis.from_url(url)
    writer = aioredis.from_url(url)
    key = f"bench-raw-{uuid.uuid4().hex}"
    out: list[float] = []
    try:
        last = "0-0"
        await writer.xadd(key, {"x": "0"})
        last = (await reader.xrevrange(key, "+", "-", 1))[0][0]
        for i in range(samples + WARMUP):
            woke: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            async def read(after: Any = last, fut: asyncio.Future[float] = woke) -> Any:
                reply = await reader.xread({key: after}, block=10_000, count=1)
                fut.set_result(time.perf_counter())
                return reply[0][1][-1][0]

            task = asyncio.create_task(read())
            await asyncio.sleep(0.002)  # let the reader block
            t0 = time.perf_counter()
            await writer.xadd(key, {"x": str(i)})
            last = await task
            if i >= WARMUP:
                out.append(woke.result() - t0)
    finally:
        await reader.aclose()
        await writer.aclose()
    return out


async def _blocked(o: Orchestrator, n: int) -> None:
    while o.waiters < n:
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.002)  # their reads are done; they wait on the tailer


async def _woken_at(o: Orchestrator, wid: str) -> float:
    await o.wait_for_start(PROJECT, wid)
    return time.perf_counter()


async def chatlog_wakeups(o: Orchestrator, store: EventStore, samples: int,
                          background: int = 0) -> tuple[list[float], dict[str, float]]:
    """Single wake-ups with ``background`` other waits blocked; seconds each, plus extras."""
    extra: dict[str, float] = {}
    holders: list[asyncio.Task[float]] = []
    if background:
        gc.collect()
        rss0 = rss_mb()
        ids = [f"bg-{uuid.uuid4().hex}" for _ in range(background)]
        await asyncio.gather(*(o.create_workflow(PROJECT, workflow_id=w, start_timeout=3600)
                               for w in ids))
        rss1 = rss_mb()
        holders = [asyncio.create_task(_woken_at(o, w), name=w) for w in ids]
        await _blocked(o, background)
        gc.collect()
        rss2 = rss_mb()
        extra["rss_mb_before"] = rss0
        extra["rss_mb_after_creating"] = rss1
        extra["rss_mb_with_waits"] = rss2
        # an upper bound: creating the workflows and registering the waits, all in
        extra["kb_per_wait"] = round((rss2 - rss0) * 1024 / background, 2)
    out: list[float] = []
    for i in range(samples + WARMUP):
        wid = f"wf-{uuid.uuid4().hex}"
        await o.create_workflow(PROJECT, workflow_id=wid, start_timeout=3600)
        task = asyncio.create_task(_woken_at(o, wid))
        await _blocked(o, background + 1)
        t0 = time.perf_counter()
        await store.append([_started(wid)], expected_version=1)
        t1 = await task
        if i >= WARMUP:
            out.append(t1 - t0)
    if holders:
        extra["burst_s"] = await _burst(store, holders)
    return out, extra


async def _burst(store: EventStore, holders: list[asyncio.Task[float]]) -> float:
    """Append every background workflow's start at once; seconds until all woke."""
    ids = [h.get_name() for h in holders]
    start = time.perf_counter()
    await asyncio.gather(*(store.append([_started(w)], expected_version=1) for w in ids))
    woke = await asyncio.gather(*holders)
    return round(max(woke) - start, 3)


async def measure(url: str, prefix: str, samples: int, waiters: int,
                  data_dir: Any) -> dict[str, Any]:
    raw = await raw_wakeups(url, samples)
    store = await EventStore.open(url, prefix=prefix)
    settings = Settings(redis_url=url, key_prefix=prefix, data_dir=data_dir)
    o = Orchestrator(store, settings)
    await o.start()
    try:
        one, _ = await chatlog_wakeups(o, store, samples)
        many, extra = await chatlog_wakeups(o, store, samples, background=waiters)
    finally:
        await o.stop()
        await store.close()
    return {"raw": raw, "one": one, "many": many, **extra}


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    samples = 100 if args.quick else 300
    waiters = 2_000 if args.quick else 10_000
    runs: list[dict[str, Any]] = []
    with valkey_server() as server, scratch_dir("waits") as data:
        for rep in range(args.reps):
            asyncio.run(reset_server(server.url))
            runs.append(asyncio.run(measure(server.url, f"bw{rep}", samples, waiters, data)))
            print(f"rep {rep + 1}/{args.reps} done", flush=True)

    def p(name: str, q: float) -> list[float]:
        return [percentiles(r[name], (q,))[f"p{q:g}"] * 1000 for r in runs]

    raw50, raw99 = p("raw", 50), p("raw", 99)
    one50, one99 = p("one", 50), p("one", 99)
    many50, many99 = p("many", 50), p("many", 99)
    best_raw99 = min(raw99)
    results = [
        metric("raw XREAD BLOCK wake-up p50", raw50, "ms", higher_is_better=False),
        metric("raw XREAD BLOCK wake-up p99", raw99, "ms", higher_is_better=False),
        metric("wait_for_start, 1 waiter, p50", one50, "ms", higher_is_better=False,
               ratio=round(min(one50) / min(raw50), 2), ratio_to="raw XREAD BLOCK wake-up p50"),
        metric("wait_for_start, 1 waiter, p99", one99, "ms", higher_is_better=False,
               ratio=round(min(one99) / best_raw99, 2), ratio_to="raw XREAD BLOCK wake-up p99",
               goal="<= raw p99 + 2 ms", goal_met=min(one99) <= best_raw99 + 2.0),
        metric(f"wait_for_start, {waiters:,} waiters, p50", many50, "ms",
               higher_is_better=False, ratio=round(min(many50) / min(raw50), 2),
               ratio_to="raw XREAD BLOCK wake-up p50"),
        metric(f"wait_for_start, {waiters:,} waiters, p99", many99, "ms",
               higher_is_better=False, ratio=round(min(many99) / best_raw99, 2),
               ratio_to="raw XREAD BLOCK wake-up p99", goal="< 50 ms",
               goal_met=min(many99) < 50.0),
        metric(f"wake all {waiters:,} at once (burst)", [r["burst_s"] for r in runs], "s",
               higher_is_better=False),
        metric(f"process RSS growth per wait ({waiters:,} created + blocked)",
               [r["kb_per_wait"] for r in runs], "KiB", higher_is_better=False),
        metric(f"process RSS with {waiters:,} waits", [r["rss_mb_with_waits"] for r in runs],
               "MiB", higher_is_better=False),
    ]
    print_table("orchestrator wait wake-up latency (append -> waiter resumes)", results)
    emit("waits", results, args, samples=samples, waiters=waiters,
         medians_ms={k: round(statistics.median(runs[0][k]) * 1000, 3)
                     for k in ("raw", "one", "many")})


if __name__ == "__main__":
    main()
