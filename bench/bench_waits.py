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
  at once (their events appended by another process in one group commit, so
  they land in the log together: timed from the waits' tail read returning the
  first of them to the last wait resuming; the burst with its appends is shown
  beside), and the process memory the waits take.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import time
import tracemalloc
import uuid
from typing import Any

import redis.asyncio as aioredis

from _common import (
    PROJECT,
    bench_args,
    emit,
    message_event,
    metric,
    percentiles,
    print_table,
    reset_server,
    rss_mb,
    scratch_dir,
    valkey_server,
)
from chatlog.errors import VersionConflict
from chatlog.events import NewEvent, WorkflowStarted
from chatlog.eventstore import EventStore
from chatlog.orchestrator import Orchestrator
from chatlog.settings import Settings

WARMUP = 20


def _started(wid: str) -> NewEvent:
    return NewEvent.of(WorkflowStarted(), project=PROJECT.key, project_name=PROJECT.display,
                       aggregate_type="workflow", aggregate_id=wid)


class RawWaker:
    """A redis-py client blocked in XREAD BLOCK; another client XADDs: the raw figure."""

    def __init__(self, url: str) -> None:
        self.reader = aioredis.from_url(url)
        self.writer = aioredis.from_url(url)
        self.key = f"bench-raw-{uuid.uuid4().hex}"
        self.last: Any = "0-0"

    async def open(self) -> None:
        self.last = await self.writer.xadd(self.key, {"x": "0"})

    async def close(self) -> None:
        await self.reader.aclose()
        await self.writer.aclose()

    async def sample(self) -> float:
        """Seconds from just before the XADD to the blocked reader resuming."""
        async def read() -> tuple[float, Any]:
            reply = await self.reader.xread({self.key: self.last}, block=10_000, count=1)
            return time.perf_counter(), reply[0][1][-1][0]

        task = asyncio.create_task(read())
        await asyncio.sleep(0.002)  # let the reader block
        t0 = time.perf_counter()
        await self.writer.xadd(self.key, {"x": "1"})
        t1, self.last = await task
        return t1 - t0


async def _blocked(o: Orchestrator, n: int) -> None:
    """Until ``n`` waits have read their workflow and wait on the tailer (registered
    is not enough: a burst measured while their reads still run measures the reads)."""
    while o.waiters < n:
        await asyncio.sleep(0.002)
    while o.blocked < n:
        await asyncio.sleep(0.002)


async def _woken_at(o: Orchestrator, wid: str) -> float:
    await o.wait_for_start(PROJECT, wid)
    return time.monotonic()  # system-wide: compared with the burst process's clock


async def chatlog_sample(o: Orchestrator, store: EventStore, background: int) -> float:
    """Seconds from just before appending ``workflow.started`` to its waiter resuming."""
    wid = f"wf-{uuid.uuid4().hex}"
    await o.create_workflow(PROJECT, workflow_id=wid, start_timeout=3600)
    task = asyncio.create_task(_woken_at(o, wid))
    await _blocked(o, background + 1)
    t0 = time.monotonic()
    await store.append([_started(wid)], expected_version=1)
    return await task - t0


async def interleaved(o: Orchestrator, store: EventStore, raw: RawWaker, samples: int,
                      background: int) -> tuple[list[float], list[float]]:
    """Raw and chatlog samples taken in turns, so the machine's noise hits both alike."""
    raws: list[float] = []
    ours: list[float] = []
    for i in range(samples + WARMUP):
        r = await raw.sample()
        c = await chatlog_sample(o, store, background)
        if i >= WARMUP:
            raws.append(r)
            ours.append(c)
    return raws, ours


async def block_many(o: Orchestrator, n: int) -> tuple[list[asyncio.Task[float]], dict[str, float]]:
    """``n`` workflows created and waited on; memory the waits take (tracemalloc and RSS)."""
    ids = [f"bg-{uuid.uuid4().hex}" for _ in range(n)]
    await asyncio.gather(*(o.create_workflow(PROJECT, workflow_id=w, start_timeout=3600)
                           for w in ids))
    gc.collect()
    rss0 = rss_mb()
    tracemalloc.start()
    heap0 = tracemalloc.get_traced_memory()[0]
    holders = [asyncio.create_task(_woken_at(o, w), name=w) for w in ids]
    await _blocked(o, n)
    gc.collect()
    heap1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss1 = rss_mb()
    return holders, {
        "kb_per_wait": round((heap1 - heap0) / 1024 / n, 2),
        "rss_mb_with_waits": rss1,
        "rss_mb_growth": round(rss1 - rss0, 1),
    }


async def _append_burst(url: str, prefix: str, ids: list[str]) -> tuple[float, float]:
    """In the burst's own process: append every workflow's start in one group commit,
    one script call (atomic: its events land in the log at once). The store's group
    size is raised to the burst's, and an append that writes nothing (a version
    conflict) goes first, so that every append of the burst queues behind it: none goes
    alone. The (system-wide) monotonic time before the first append, and when the
    commit was acknowledged (its first append to return)."""
    store = await EventStore.open(url, prefix=prefix)
    store._appender._max_batch = len(ids)  # a bench may look inside
    done: list[float] = []

    async def start(wid: str) -> None:
        await store.append([_started(wid)], expected_version=1)
        done.append(time.monotonic())

    async def nothing() -> None:
        with contextlib.suppress(VersionConflict):
            await store.append([message_event(0, f"none-{uuid.uuid4().hex}")],
                               expected_version=5)

    began = time.monotonic()
    try:
        await asyncio.gather(nothing(), *(start(w) for w in ids))
    finally:
        await store.close()
    return began, min(done)


def burst_child(url: str, prefix: str) -> None:
    """``bench_waits.py --burst URL PREFIX``: ids on stdin, one a line; prints the times."""
    ids = sys.stdin.read().split()
    began, acked = asyncio.run(_append_burst(url, prefix, ids))
    print(f"{began!r} {acked!r}", flush=True)


async def _burst(store: EventStore, url: str, prefix: str,
                 holders: list[asyncio.Task[float]]) -> dict[str, float]:
    """Every blocked workflow's start appended by another process in one group commit,
    one script call (their events land in the log at once), then timed until the last
    of the waits resumed.

    ``burst_wake_s`` times from the moment the waits' tail read returns the first of
    the burst's events (the events have reached this process; measured on the tail's
    reads) to the last wait resuming: the reads of the rest, decoding, dispatch and
    the wake-ups, nothing of the appends (another process's). ``burst_s`` times from
    before the first append (appends included)."""
    ids = [h.get_name() for h in holders]
    topology = store._topology  # a bench may look inside: when the reads returned
    read, arrived = topology.xread, []

    async def timed_read(*args: Any, **kw: Any) -> Any:
        got = await read(*args, **kw)
        if got and not arrived:
            arrived.append(time.monotonic())
        return got

    topology.xread = timed_read  # type: ignore[method-assign]
    cpu = time.process_time()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--burst", url, prefix,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await child.communicate("\n".join(ids).encode())
        if child.returncode != 0:
            raise RuntimeError(f"the burst's process failed ({child.returncode})")
        began, acked = (float(x) for x in out.split()[-2:])
        woke = await asyncio.gather(*holders)
    finally:
        topology.xread = read  # type: ignore[method-assign]
    last = max(woke)
    return {"burst_s": round(last - began, 3), "burst_appends_s": round(acked - began, 3),
            "burst_wake_s": round(last - arrived[0], 3),
            # this process's CPU (tailer, fan-out, wake-ups; the appends are the other
            # process's) per wait ended: steadier than wall time on a shared machine
            "burst_cpu_us_per_wait": round((time.process_time() - cpu) / len(ids) * 1e6, 1)}


async def measure(url: str, prefix: str, samples: int, waiters: int,
                  data_dir: Any) -> dict[str, Any]:
    store = await EventStore.open(url, prefix=prefix)
    settings = Settings(redis_url=url, key_prefix=prefix, data_dir=data_dir)
    o = Orchestrator(store, settings)
    raw = RawWaker(url)
    await raw.open()
    await o.start()
    try:
        raw1, one = await interleaved(o, store, raw, samples, 0)
        holders, memory = await block_many(o, waiters)
        raw_many, many = await interleaved(o, store, raw, samples, waiters)
        burst = await _burst(store, url, prefix, holders)
    finally:
        await o.stop()
        await raw.close()
        await store.close()
    return {"raw": raw1, "one": one, "raw_many": raw_many, "many": many, **burst, **memory}


def main() -> None:
    if sys.argv[1:2] == ["--burst"]:
        burst_child(sys.argv[2], sys.argv[3])
        return
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
    rawm50, rawm99 = p("raw_many", 50), p("raw_many", 99)
    many50, many99 = p("many", 50), p("many", 99)
    # each repetition compares with the raw figure taken in turns with it
    over50 = [a - b for a, b in zip(one50, raw50, strict=True)]
    over99 = [a - b for a, b in zip(one99, raw99, strict=True)]
    results = [
        metric("raw XREAD BLOCK wake-up p50", raw50, "ms", higher_is_better=False),
        metric("raw XREAD BLOCK wake-up p99", raw99, "ms", higher_is_better=False),
        metric("wait_for_start, 1 waiter, p50", one50, "ms", higher_is_better=False,
               ratio=round(min(one50) / min(raw50), 2), ratio_to="raw XREAD BLOCK wake-up p50"),
        metric("wait_for_start, 1 waiter, p99", one99, "ms", higher_is_better=False,
               ratio=round(min(one99) / min(raw99), 2), ratio_to="raw XREAD BLOCK wake-up p99"),
        metric("1 waiter: p50 over raw (same rep)", over50, "ms", higher_is_better=False),
        metric("1 waiter: p99 over raw (same rep)", over99, "ms", higher_is_better=False,
               goal="<= 2 ms", goal_met=min(over99) <= 2.0),
        metric(f"raw XREAD BLOCK p99, beside {waiters:,} waits", rawm99, "ms",
               higher_is_better=False),
        metric(f"wait_for_start, {waiters:,} waiters, p50", many50, "ms",
               higher_is_better=False, ratio=round(min(many50) / min(rawm50), 2),
               ratio_to="raw p50 beside them"),
        metric(f"wait_for_start, {waiters:,} waiters, p99", many99, "ms",
               higher_is_better=False, ratio=round(min(many99) / min(rawm99), 2),
               ratio_to="raw p99 beside them", goal="< 50 ms", goal_met=min(many99) < 50.0),
        metric(f"wake {waiters:,} waits whose events land at once (from their first read)",
               [r["burst_wake_s"] for r in runs], "s", higher_is_better=False,
               goal="<= 0.3 s (10,000, quiet machine)",
               goal_met=min(r["burst_wake_s"] for r in runs) <= 0.3),
        metric(f"  the burst from its first append (appends of {waiters:,} included)",
               [r["burst_s"] for r in runs], "s", higher_is_better=False),
        metric("  of which the appends (until the commit's ack, in their process)",
               [r["burst_appends_s"] for r in runs], "s", higher_is_better=False),
        metric("  CPU per wait woken, the waits' process (tailer, fan-out, wake-up)",
               [r["burst_cpu_us_per_wait"] for r in runs], "us", higher_is_better=False),
        metric("Python heap per blocked wait (tracemalloc)", [r["kb_per_wait"] for r in runs],
               "KiB", higher_is_better=False),
        metric(f"process RSS with {waiters:,} waits", [r["rss_mb_with_waits"] for r in runs],
               "MiB", higher_is_better=False),
    ]
    print_table("orchestrator wait wake-up latency (append -> waiter resumes)", results)
    emit("waits", results, args, samples=samples, waiters=waiters,
         medians_ms={k: [round(statistics.median(r[k]) * 1000, 3) for r in runs]
                     for k in ("raw", "one", "raw_many", "many")})


if __name__ == "__main__":
    main()
