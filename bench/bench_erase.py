"""Erasure: one thread of 1,000 messages and one project of 100,000 messages out of a
1,000,000-event log (``--quick``: a 100,000-event log, a 10,000-message project).

On one fresh Valkey (the embedded default's settings: AOF, fsync always), the
log is filled by pipelined appends; its older half is sealed into the archive
(Parquet segments) and trimmed from Redis; the read model is built. Then,
while a concurrent append load runs, each erasure is measured:

- time to report: until the erasure is recorded and its tombstone is in the log
  (what a ``DELETE`` could answer 202 with);
- time to physical completion: every tier done (Redis, archive segments
  rewritten, read model purged and its WAL truncated, the AOF rewritten);
- the per-step times;
- the append p99 of the concurrent load during the erasure, beside the same
  load without it measured just before in the same repetition (goal: within
  2x), and the load's p99 within each step (where appends stall).

Each of ``--reps`` repetitions erases its own thread and project of the same log
(best and median over them). Runs alone: ``.venv/bin/python bench/bench_erase.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    bench_args,
    emit,
    message_data,
    metric,
    percentiles,
    print_table,
    scratch_dir,
    valkey_server,
)
from chatlog.erasure import Eraser
from chatlog.events import NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.identity import ProjectKey, normalize_project_id
from chatlog.projections import Projector

PER_APPEND = 10
CONCURRENT = 200
LOAD_TASKS = 8  # concurrent appenders of the measured load


def _args() -> argparse.Namespace:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--events", type=int, default=None,
                       help="events in the log (default 1,000,000; 100,000 with --quick)")
        p.add_argument("--project-events", type=int, default=None,
                       help="messages of the erased project (default 100,000; 10,000 quick)")
        p.add_argument("--thread-events", type=int, default=1_000,
                       help="messages of the erased thread (default 1,000)")

    args = bench_args("erasure of a thread and of a project", add=add)
    if args.events is None:
        args.events = 100_000 if args.quick else 1_000_000
    if args.project_events is None:
        args.project_events = 10_000 if args.quick else 100_000
    return args


def _batch(key: ProjectKey, thread: str, n: int, i: int, datas: list[Any]) -> list[NewEvent]:
    return [NewEvent(type="message.appended", project=key.key, project_name=key.display,
                     aggregate_type="thread", aggregate_id=thread,
                     data={**datas[(i + j) % 50], "thread_id": thread}) for j in range(n)]


async def populate(store: EventStore, args: argparse.Namespace) -> tuple[list[ProjectKey],
                                                                           ProjectKey]:
    """The log: one erased project and one erased thread (in a kept project) per
    repetition, and filler projects, interleaved in rounds so each is spread over
    the whole log."""
    erased = [normalize_project_id(f"Erased-Project-{r}") for r in range(args.reps)]
    kept = normalize_project_id("Kept-Project")
    fillers = [normalize_project_id(f"Filler-{i}") for i in range(8)]
    datas = [message_data(i, "x").model_dump(mode="json") for i in range(50)]
    plan: list[tuple[ProjectKey, str, str]] = []
    for r, key in enumerate(erased):
        plan += [(key, f"e-{t}", f"erased-{r}") for t in range(100)]
        plan.append((kept, f"the-thread-{r}", f"thread-{r}"))
    plan += [(fillers[t % 8], f"f-{t}", "filler") for t in range(400)]
    budget = {f"erased-{r}": args.project_events for r in range(args.reps)}
    budget |= {f"thread-{r}": args.thread_events for r in range(args.reps)}
    budget["filler"] = args.events - args.reps * (args.project_events + args.thread_events)
    if budget["filler"] < 0:
        raise SystemExit("--events is smaller than the erased projects and threads")
    written, pending, i = 0, [], 0
    while written < args.events:
        progressed = False
        for key, thread, kind in plan:
            n = min(PER_APPEND, budget[kind])
            if n <= 0:
                continue
            budget[kind] -= n
            pending.append(store.append(_batch(key, thread, n, i, datas)))
            i += n
            written += n
            progressed = True
            if len(pending) >= CONCURRENT:
                await asyncio.gather(*pending)
                pending = []
        if not progressed:
            break
    if pending:
        await asyncio.gather(*pending)
    return erased, kept


async def seal_half(store: EventStore, archive: Archive, total: int) -> int:
    """Seal the older half of the log into segments of 100,000 events, then trim it."""
    half = total // 2
    after, sealed = "0-0", 0
    while sealed < half:
        entries = await store.read_flat(0, after, min(100_000, half - sealed))
        archive.publish(archive.stage(0, entries))
        sealed += len(entries)
        after = entries[-1][0].decode()
    nxt = await store.read_flat(0, after, 1)
    await store.trim(0, nxt[0][0].decode())
    return sealed


Sample = tuple[float, float]
"""(when the append answered, perf_counter; its latency, s)"""


async def load(store: EventStore, stop: asyncio.Event, samples: list[Sample]) -> None:
    key = normalize_project_id("Load")
    datas = [message_data(i, "x").model_dump(mode="json") for i in range(50)]

    async def one(w: int) -> None:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            await store.append(_batch(key, f"load-{w}", 1, i, datas))
            t1 = time.perf_counter()
            samples.append((t1, t1 - t0))
            i += 1

    await asyncio.gather(*(one(w) for w in range(LOAD_TASKS)))


async def under_load(store: EventStore, work: Any, seconds: float) -> list[Sample]:
    """Run ``work`` (or wait ``seconds``) while the load runs; the load's samples."""
    samples: list[Sample] = []
    stop = asyncio.Event()
    task = asyncio.ensure_future(load(store, stop, samples))
    try:
        await (work if work is not None else asyncio.sleep(seconds))
    finally:
        stop.set()
        await task
    return samples


def p99_ms(samples: list[Sample]) -> float:
    return percentiles([lat for _, lat in samples])["p99"] * 1000 if samples else 0.0


STEPS = ("tombstoned", "redis", "archive", "read_models", "aof", "done")


async def main() -> None:
    args = _args()
    runs: dict[str, list[float]] = {}
    extra: dict[str, dict[str, Any]] = {}

    def add(name: str, value: float, **more: Any) -> None:
        runs.setdefault(name, []).append(value)
        extra.setdefault(name, {}).update(more)

    with valkey_server() as server, scratch_dir("erase") as data:
        store = await EventStore.open(server.url)
        try:
            t0 = time.perf_counter()
            erased, kept = await populate(store, args)
            filled = time.perf_counter() - t0
            projector = Projector(store, data / "readmodel.sqlite")
            await projector.open()
            await projector.catch_up()
            archive = Archive.open(str(data / "archive"))
            sealed = await seal_half(store, archive, args.events)
            print(f"log: {args.events} events in {filled:.1f} s; {sealed} sealed; "
                  f"{time.perf_counter() - t0:.1f} s with the read model", flush=True)

            await projector.start()  # live, as in serve: it follows the load

            async def applied(partition: int, position: str) -> None:
                await projector.wait_for(partition, position, timeout=600)

            steps: dict[str, float] = {}
            eraser = Eraser(store, archive=archive, read_models=[Path(projector.path)],
                            wait_applied=applied, data_dir=server.dir,  # as serve's own
                            on_step=lambda s: steps.__setitem__(s, time.perf_counter()))
            for rep in range(args.reps):
                # The ceiling of this repetition: the same load, no erasure, just before.
                base_p99 = p99_ms(await under_load(store, None, args.duration * 4))
                add("append p99 without erasure", base_p99)
                for label, key, thread, count in (
                        ("thread", kept, f"the-thread-{rep}", args.thread_events),
                        ("project", erased[rep], None, args.project_events)):
                    steps.clear()
                    start = time.perf_counter()
                    box: dict[str, Any] = {}

                    async def run(key: ProjectKey = key, thread: str | None = thread,
                                  box: dict[str, Any] = box) -> None:
                        box["report"] = await eraser.erase(key.key, key.display, thread)

                    samples = await under_load(store, run(), 0)
                    report = box["report"]
                    erased_n = sum(report.events_erased.values())
                    assert erased_n == count, (erased_n, count)
                    p99 = p99_ms(samples)
                    prev = start
                    for step in STEPS[:-1]:
                        inside = [x for x in samples if prev <= x[0] < steps[step]]
                        add(f"{label}: step {step}", (steps[step] - prev) * 1000)
                        add(f"{label}: append p99 in step {step}", p99_ms(inside),
                            samples=len(inside))
                        prev = steps[step]
                    add(f"{label} of {count}: time to report",
                        (steps["tombstoned"] - start) * 1000)
                    add(f"{label} of {count}: time to physical completion",
                        (steps["done"] - start) * 1000, bytes_rewritten=report.bytes_rewritten)
                    add(f"{label}: append p99 during erasure", p99, samples=len(samples))
                    add(f"{label}: p99 during / without (same rep)", p99 / base_p99)
                    print(f"rep {rep + 1}: {label}: p99 {p99:.1f} ms against {base_p99:.1f} ms "
                          f"({p99 / base_p99:.2f}x); complete in "
                          f"{steps['done'] - start:.1f} s", flush=True)
            await projector.stop()
        finally:
            await store.close()
    results = []
    for name, values in runs.items():
        more = extra[name]
        if name.endswith("(same rep)"):
            med = statistics.median(values)
            results.append(metric(name, values, "x", higher_is_better=False,
                                  goal="<= 2x", goal_met=med <= 2.0, **more))
        else:
            results.append(metric(name, values, "ms", higher_is_better=False, **more))
    print_table("erasure", results)
    emit("erase", results, args, events=args.events, project_events=args.project_events)


if __name__ == "__main__":
    asyncio.run(main())
