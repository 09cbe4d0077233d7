"""Rebuild of the conversation read model from the log: events/s and peak RSS.

On one fresh Valkey (the embedded default's settings), the log is filled
with ``--events`` message events (default 1,000,000; 10 projects, 10,000
threads, ~200-character messages) by pipelined appends, then measured in
the same run:

- ceiling 1: raw redis-py ``XRANGE`` of the whole log (5,000 entries a call);
- ceiling 2: raw ``sqlite3`` ``executemany`` of the same message rows into the
  same schema (bulk style: a fresh file, journal off, indexes after loading);
- chatlog ``rebuild()`` end to end (read, fold, write, index, catch up, switch),
  in a child process so its peak RSS is its own (goal ≥ 100,000 events/s,
  peak RSS < 300 MB); and the same with ``processes=True`` (the log read and
  folded in a second process);
- the live projector following appends made at the batched rate by another
  process (as bench_append's batched appends): the largest lag seen (goal < 1 s).

Runs alone: ``.venv/bin/python bench/bench_rebuild.py [--events N] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _common import (
    bench_args,
    emit,
    message_data,
    metric,
    print_table,
    scratch_dir,
    server_info,
    valkey_server,
)
from chatlog.events import NewEvent
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector

PREFIX = "bench"
PER_APPEND = 10  # events of one thread per append call
CONCURRENT = 200  # append calls in flight (group-committed)


def _args() -> argparse.Namespace:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--events", type=int, default=None,
                       help="message events in the log (default 1,000,000; 100,000 with --quick)")
        p.add_argument("--threads", type=int, default=10_000, help="threads (default 10,000)")
        p.add_argument("--batch", type=int, default=None,
                       help="the live projector's batch size (default: the Projector's)")
        p.add_argument("--projects", type=int, default=10, help="projects (default 10)")
        p.add_argument("--child", nargs=4, metavar=("URL", "PATH", "OUT", "PROCS"),
                       help=argparse.SUPPRESS)
        p.add_argument("--appender", nargs=3, metavar=("URL", "SECONDS", "OUT"),
                       help=argparse.SUPPRESS)

    args = bench_args("rebuild of the conversation read model", add=add)
    if args.events is None:
        args.events = 100_000 if args.quick else 1_000_000
    args.reps = 1 if args.reps is None else args.reps
    return args


# -- the log --------------------------------------------------------------------


def _thread_plan(projects: int, threads: int) -> list[tuple[Any, str]]:
    keys = [normalize_project_id(f"Bench-Project-{i}") for i in range(projects)]
    return [(keys[t % projects], f"thread-{t:06d}") for t in range(threads)]


async def populate(url: str, events: int, projects: int, threads: int) -> float:
    """Fill the log: rounds over every thread, PER_APPEND events per thread per round."""
    store = await EventStore.open(url, prefix=PREFIX)
    plan = _thread_plan(projects, threads)
    datas = [message_data(i, "x").model_dump(mode="json") for i in range(50)]
    started = time.perf_counter()
    written = 0
    pending: list[Any] = []
    try:
        i = 0
        while written < events:
            for key, thread in plan:
                n = min(PER_APPEND, events - written)
                if n <= 0:
                    break
                batch = [
                    NewEvent(type="message.appended", project=key.key, project_name=key.display,
                             aggregate_type="thread", aggregate_id=thread,
                             data={**datas[(i + j) % 50], "thread_id": thread})
                    for j in range(n)
                ]
                i += n
                written += n
                pending.append(store.append(batch))
                if len(pending) >= CONCURRENT:
                    await asyncio.gather(*pending)
                    pending = []
        if pending:
            await asyncio.gather(*pending)
    finally:
        await store.close()
    return written / (time.perf_counter() - started)


# -- ceilings -------------------------------------------------------------------


async def raw_xrange(url: str) -> float:
    r = aioredis.from_url(url)
    key = f"{PREFIX}:{{p0}}:log"
    n = 0
    started = time.perf_counter()
    try:
        after = "-"
        while True:
            entries = await r.xrange(key, after, "+", 5000)
            if not entries:
                break
            n += len(entries)
            after = "(" + entries[-1][0].decode()
    finally:
        await r.aclose()
    return n / (time.perf_counter() - started)


def raw_sqlite(path: Path, events: int, plan: list[tuple[Any, str]]) -> float:
    """executemany of message rows shaped like the log's, into the same schema, bulk style."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA cache_size=-65536")
    proj = ConversationsProjection()
    proj.create_schema(conn)
    datas = [message_data(i, "x") for i in range(50)]
    chunk = 5000
    spent = 0.0
    done = 0
    version = 0
    conn.execute("BEGIN")
    while done < events:
        rows = []
        for k in range(min(chunk, events - done)):
            key, thread = plan[(done + k) // PER_APPEND % len(plan)]
            d = datas[(done + k) % 50]
            rows.append((str(key.key), thread, version, "00000000-0000-0000-0000-000000000000",
                         d.role, d.content, json.dumps(d.metadata), 1_700_000_000_000 + done,
                         f"1700000000000-{done + k}"))
            version += 1
        t0 = time.perf_counter()
        conn.executemany(
            "INSERT INTO messages (project, thread_id, version, message_id, role, content,"
            " metadata, created_ms, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        spent += time.perf_counter() - t0
        done += len(rows)
    t0 = time.perf_counter()
    conn.execute("COMMIT")
    proj.create_indexes(conn)
    spent += time.perf_counter() - t0
    conn.close()
    return events / spent


# -- chatlog ----------------------------------------------------------------------


def child_rebuild(url: str, path: str, out: str, processes: str) -> None:
    """In a child process: rebuild, and write events/s and peak RSS to ``out``."""
    from chatlog.projections.rebuild import rebuild

    async def run() -> dict[str, Any]:
        store = await EventStore.open(url, prefix=PREFIX)
        try:
            result = await rebuild(store, Path(path), [ConversationsProjection()],
                                   processes=processes == "1")
        finally:
            await store.close()
        return {"events": result.events, "seconds": result.seconds}

    doc = asyncio.run(run())
    doc["peak_rss_mb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                             resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    Path(out).write_text(json.dumps(doc))


def chatlog_rebuild(url: str, path: Path, processes: bool) -> dict[str, Any]:
    out = path.with_suffix(".json")
    subprocess.run([sys.executable, __file__, "--child", url, str(path), str(out),
                    "1" if processes else "0"], check=True)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


async def append_for(url: str, seconds: float, projects: int, threads: int) -> dict[str, Any]:
    """Append batches (PER_APPEND events of one thread, CONCURRENT in flight) for ``seconds``."""
    store = await EventStore.open(url, prefix=PREFIX)
    plan = _thread_plan(projects, threads)
    data = message_data(1, "x").model_dump(mode="json")
    appended = 0
    i = 0
    try:
        started = time.perf_counter()
        stop = started + seconds
        while time.perf_counter() < stop:
            calls = []
            for _ in range(CONCURRENT):
                key, thread = plan[i % len(plan)]
                i += 1
                calls.append(store.append([
                    NewEvent(type="message.appended", project=key.key, project_name=key.display,
                             aggregate_type="thread", aggregate_id=thread,
                             data={**data, "thread_id": thread})
                    for _ in range(PER_APPEND)]))
            results = await asyncio.gather(*calls)
            appended += sum(len(r) for r in results)
        rate = appended / (time.perf_counter() - started)
    finally:
        await store.close()
    last = results[-1][-1]
    return {"rate": rate, "partition": last.partition, "position": last.position}


def child_append(url: str, seconds: str, out: str) -> None:
    doc = asyncio.run(append_for(url, float(seconds), 10, 10_000))
    Path(out).write_text(json.dumps(doc))


async def live_lag(url: str, path: Path, seconds: float,
                   batch: int | None = None) -> dict[str, float]:
    """The projector (this process) follows appends made by another process; sample its lag."""
    store = await EventStore.open(url, prefix=PREFIX)
    worst = 0.0
    out = path.with_suffix(".append.json")
    try:
        extra: dict[str, Any] = {} if batch is None else {"batch_size": batch}
        async with Projector(store, path, [ConversationsProjection()], block=0.2,
                             **extra) as projector:
            await projector.catch_up()

            done = asyncio.Event()

            async def sampler() -> None:
                # Stops on a flag, not by cancelling: a cancel that lands inside
                # a redis-py call can be swallowed, and the bench hung on it once.
                nonlocal worst
                while not done.is_set():
                    lag = await projector.lag()
                    worst = max(worst, lag.seconds_behind)
                    await asyncio.sleep(0.1)

            sampling = asyncio.create_task(sampler())
            try:
                appender = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--appender", url, str(seconds), str(out))
                await appender.wait()
                doc = json.loads(out.read_text())
                t0 = time.perf_counter()
                await projector.wait_for(doc["partition"], doc["position"], 60)
                drain = time.perf_counter() - t0
            finally:
                done.set()
                await asyncio.gather(sampling, return_exceptions=True)
    finally:
        await store.close()
    return {"append_rate": doc["rate"], "max_lag_s": worst, "drain_s": drain}


def _settle() -> None:
    """Untimed, before each measurement: write back what the last one left dirty.

    A measurement that writes ~400 MB of SQLite pages leaves the kernel writing
    them back for seconds after; that should not be charged to the next one.
    """
    os.sync()
    time.sleep(0.5)


def main() -> None:
    args = _args()
    if args.child:
        child_rebuild(*args.child)
        return
    if args.appender:
        child_append(*args.appender)
        return
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"events": args.events, "threads": args.threads,
                             "projects": args.projects}
    with valkey_server() as server, scratch_dir("rebuild") as scratch:
        print(f"filling the log with {args.events:,} events ...", flush=True)
        fill = asyncio.run(populate(server.url, args.events, args.projects, args.threads))
        extra["fill_events_per_s"] = round(fill)
        extra["server"] = asyncio.run(server_info(server.url))
        plan = _thread_plan(args.projects, args.threads)
        xr, sq, rb, rss, rbp, rssp = [], [], [], [], [], []
        for rep in range(args.reps):
            _settle()
            xr.append(asyncio.run(raw_xrange(server.url)))
            raw = scratch / f"raw{rep}.sqlite"
            sq.append(raw_sqlite(raw, args.events, plan))
            raw.unlink()
            _settle()
            live = scratch / f"live{rep}.sqlite"
            doc = chatlog_rebuild(server.url, live, processes=False)
            rb.append(doc["events"] / doc["seconds"])
            rss.append(doc["peak_rss_mb"])
            _settle()
            doc = chatlog_rebuild(server.url, scratch / f"procs{rep}.sqlite", processes=True)
            rbp.append(doc["events"] / doc["seconds"])
            rssp.append(doc["peak_rss_mb"])
            print(f"rep {rep + 1}: XRANGE {xr[-1]:,.0f}/s  sqlite {sq[-1]:,.0f}/s  "
                  f"rebuild {rb[-1]:,.0f}/s (peak RSS {rss[-1]:.0f} MB)  "
                  f"rebuild --processes {rbp[-1]:,.0f}/s (peak RSS {rssp[-1]:.0f} MB)",
                  flush=True)
        lag = asyncio.run(live_lag(server.url, scratch / "live0.sqlite", args.duration,
                                   args.batch))
    best_xr, best_sq, best_rb = max(xr), max(sq), max(rb)
    rows.append(metric("raw redis-py XRANGE (ceiling 1)", xr, "entries/s"))
    rows.append(metric("raw sqlite3 executemany + indexes (ceiling 2)", sq, "rows/s"))
    rows.append(metric("chatlog rebuild, end to end", rb, "events/s",
                       ratio=round(best_rb / best_xr, 2), ratio_to="raw redis-py XRANGE",
                       ratio_to_sqlite=round(best_rb / best_sq, 2),
                       goal=">= 100,000 events/s", goal_met=best_rb >= 100_000))
    rows.append(metric("chatlog rebuild peak RSS", rss, "MB", higher_is_better=False,
                       goal="< 300 MB", goal_met=min(rss) < 300))
    rows.append(metric("chatlog rebuild --processes, end to end", rbp, "events/s",
                       ratio=round(max(rbp) / best_xr, 2), ratio_to="raw redis-py XRANGE",
                       goal=">= 100,000 events/s", goal_met=max(rbp) >= 100_000))
    rows.append(metric("chatlog rebuild --processes peak RSS (largest process)", rssp, "MB",
                       higher_is_better=False, goal="< 300 MB", goal_met=min(rssp) < 300))
    rows.append(metric("live projector: appends during the run (other process)", [lag["append_rate"]],
                       "events/s"))
    rows.append(metric("live projector: largest lag seen", [lag["max_lag_s"]], "s",
                       higher_is_better=False, goal="< 1 s", goal_met=lag["max_lag_s"] < 1.0))
    rows.append(metric("live projector: drain after the last append", [lag["drain_s"]], "s",
                       higher_is_better=False))
    print_table(f"rebuild of {args.events:,} message events "
                f"({args.projects} projects, {args.threads:,} threads)", rows)
    emit("rebuild", rows, args, **extra)


if __name__ == "__main__":
    main()
