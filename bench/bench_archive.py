"""The tiered log: Redis memory stays bounded while the log grows; archiving and replay rates.

On a fresh embedded-default Valkey (``appendfsync always``), append N message
events (10,000,000; ``--quick`` 1,000,000; ~200-character content, 1,000
threads) through ``EventStore.append`` from 256 concurrent callers, each append
10 events of one thread (``--batch``; group-committed together, see
``_archive_fill.py``), while an archiver runs in a second process (as a
``chatlog serve`` node would run it) with a hot window of 200,000 events,
passing every 0.2 s. Measured:

- Redis ``used_memory`` against events appended, sampled during the fill and
  after it; goal: at most 200,000 x 600 B + 64 MB whatever N. The line without
  archiving is the slope measured over the first 200,000 events (before the
  archiver has anything to do), extrapolated. Plot:
  ``artifacts/bench/archive-memory.png``.
- Archiving: events sealed per second of the archiver's passes during the fill
  (where it shares the 2 cores with the appender and Valkey) and its CPU per
  event, beside the append rate and the appender's CPU per event; and, at the
  end, one pass sealing a backlog of 100,000 events of the hot tail with
  nothing else running: the archiver's own pace, goal >= 1x the append rate.
- Replay of the same K archived events (200,000; full size 1,000,000), paged
  1,000 at a time: ``EventStore.read_flat`` through the tiered store (the
  archive tier) and ``Archive.read_flat`` alone (a cold ``Archive``), beside
  ``EventStore.read_flat`` (XRANGE) of a copy of the whole log in a Redis
  stream (what today's build holds); and ``Archive.iter_batches`` (columnar,
  for rebuilds). Goal: the archive at least 1x the Redis rate.
- ``chatlog rebuild`` of the whole log from archive + hot tail, end to end in
  a child process, beside the same command on the Redis-only copy (today's
  XRANGE-based rebuild); goal >= 150,000 events/s, >= 1.5x, peak RSS < 500 MB.
- ``chatlog serve`` on the log with the read model that rebuild left: seconds
  to listening and to ``/readyz`` 200 (goal < 2 s), and ``/v1/events`` paging
  (limit 1,000) from the start (archive) beside paging the hot tail (Redis), a
  page of each in turn (the first page of each timed apart: the first archived
  read of a process imports pyarrow); once more on a fresh data dir (no read model: it
  catches up in the background, which ``/readyz`` shows). chatlog's sources
  are byte-compiled first, as installing it does.

The fill runs once (it is the long part); the other phases ``--reps`` times
(rebuilds ``--rebuild-reps``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from _archive_fill import BATCH, CONCURRENCY, backlog_pass, fill, peak_breakdown
from _archive_phases import (
    cli_env,
    copy_log,
    replay_store,
    serve_phase,
    serve_start,
    timed_rebuild,
)
from _common import (
    ROOT,
    bench_args,
    emit,
    metric,
    print_table,
    scratch_dir,
    server_cpu_seconds,
    valkey_server,
)
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive

HOT = 200_000
GOAL_BYTES = HOT * 600 + 64 * 2**20


async def replay_redis(url: str, k: int) -> tuple[float, float]:
    """Events/s, and CPU per event (this process + the server) in microseconds."""
    store = await EventStore.open(url, prefix="copy")
    n, after = 0, "0-0"
    server0 = await server_cpu_seconds(url)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while n < k:
        page = await store.read_flat(0, after, 1000)
        if not page:
            break
        n += len(page)
        after = page[-1][0].decode()
    rate = n / (time.perf_counter() - t0)
    cpu = time.process_time() - cpu0 + await server_cpu_seconds(url) - server0
    await store.close()
    return rate, cpu / max(n, 1) * 1e6


def replay_archive(archive_dir: str, k: int) -> tuple[float, float]:
    """Events/s, and CPU per event in microseconds."""
    archive = Archive.open(archive_dir)
    n, after = 0, "0-0"
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while n < k:
        page = archive.read_flat(0, after, min(1000, k - n))
        if not page:
            break
        n += len(page)
        after = page[-1][0].decode()
    return n / (time.perf_counter() - t0), (time.process_time() - cpu0) / max(n, 1) * 1e6


def batches_archive(archive_dir: str, k: int) -> float:
    archive = Archive.open(archive_dir)
    n = 0
    t0 = time.perf_counter()
    for batch in archive.iter_batches(0):
        n += batch.num_rows
        if n >= k:
            break
    return n / (time.perf_counter() - t0)


def plot(samples: list[tuple[int, int]], slope: float, base: int, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [s[0] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [s[1] / 2**20 for s in samples], label=f"tiered: hot window {HOT:,} events")
    ax.plot(xs, [(base + slope * x) / 2**20 for x in xs], linestyle="--",
            label=f"without archiving ({slope:.0f} B/event, measured on the first {HOT:,})")
    ax.axhline(GOAL_BYTES / 2**20, color="red", linestyle=":",
               label=f"goal: {HOT:,} x 600 B + 64 MB")
    ax.set_xlabel("events appended")
    ax.set_ylabel("Redis used_memory (MiB)")
    ax.set_title("Redis memory while the log grows")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def rebuild_metrics(rebuilds: dict[str, list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    tiered = [n / r["seconds"] for r in rebuilds["tiered"]]
    redis = [n / r["seconds"] for r in rebuilds["redis"]]
    ratio = statistics.median(tiered) / statistics.median(redis)
    rss = [r["peak_rss_mb"] for r in rebuilds["tiered"]]
    return [
        metric(f"chatlog rebuild of {n:,} events, Redis only (XRANGE, today's layout)", redis,
               "events/s"),
        metric(f"chatlog rebuild of {n:,} events from archive + hot tail", tiered, "events/s",
               ratio=round(ratio, 2), ratio_to="the Redis-only rebuild (medians)",
               goal=">= 150,000 events/s and >= 1.5x",
               goal_met=statistics.median(tiered) >= 150_000 and ratio >= 1.5),
        metric("chatlog rebuild from the archive: peak RSS", rss, "MiB",
               higher_is_better=False, goal="< 500 MB", goal_met=max(rss) < 500),
        metric("chatlog rebuild, Redis only: peak RSS",
               [r["peak_rss_mb"] for r in rebuilds["redis"]], "MiB", higher_is_better=False),
    ]


def serve_metrics(serves: list[dict[str, Any]], fresh: dict[str, Any]) -> list[dict[str, Any]]:
    listen = [s["listen_s"] for s in serves]
    ready = [s["ready_s"] for s in serves]
    archive = [s["events_archive"] for s in serves]
    redis = [s["events_redis"] for s in serves]
    ratio = statistics.median(archive) / statistics.median(redis)
    return [
        metric("chatlog serve: start to listening", listen, "s", higher_is_better=False,
               goal="< 2 s", goal_met=max(listen) < 2),
        metric("chatlog serve: start to /readyz 200", ready, "s", higher_is_better=False,
               goal="< 2 s", goal_met=statistics.median(ready) < 2),
        metric("chatlog serve: CPU seconds used by /readyz 200 (imports included)",
               [s["ready_cpu_s"] for s in serves], "s", higher_is_better=False),
        metric("/v1/events paging from the start (archive)", archive, "events/s",
               ratio=round(ratio, 2), ratio_to="/v1/events paging of the hot tail (medians)",
               goal=">= 1x", goal_met=ratio >= 1),
        metric("/v1/events paging of the hot tail (Redis)", redis, "events/s"),
        metric("/v1/events first page from the start (archive; imports pyarrow)",
               [s["first_page_archive_s"] * 1000 for s in serves], "ms",
               higher_is_better=False),
        metric("/v1/events first page of the hot tail (Redis)",
               [s["first_page_redis_s"] * 1000 for s in serves], "ms", higher_is_better=False),
        metric("chatlog serve on a fresh data dir (no read model): start to listening",
               [fresh["listen_s"]], "s", higher_is_better=False, goal="< 2 s",
               goal_met=fresh["listen_s"] < 2),
        metric("chatlog serve on a fresh data dir: start to /readyz 200",
               [fresh["ready_s"]], "s", higher_is_better=False, goal="< 2 s",
               goal_met=fresh["ready_s"] < 2),
        metric("chatlog serve on a fresh data dir: CPU seconds used by /readyz 200",
               [fresh["ready_cpu_s"]], "s", higher_is_better=False),
    ]


def backlog_rate(b: dict[str, Any]) -> float:
    return b["archived"] / b["wall_s"] if b["wall_s"] else 0.0


def fill_metrics(fills: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """The fill's figures, one run per fill: memory, rates, the archiver's CPU."""
    peaks = [max(m for _, m in f["samples"]) / 2**20 for f in fills]
    afters = [f["samples"][-1][1] / 2**20 for f in fills]
    appends = [f["n"] / f["append_s"] for f in fills]
    archives = [f["archiver"]["archived"] / f["archiver"]["wall_s"] if f["archiver"]["wall_s"]
                else 0.0 for f in fills]
    ratios = [a / b for a, b in zip(archives, appends, strict=True)]
    backlogs = [backlog_rate(f["backlog"]) for f in fills if "backlog" in f]
    goal = GOAL_BYTES / 2**20
    return [
        metric("Redis used_memory, peak during the fill", peaks, "MiB", higher_is_better=False,
               goal=f"<= {goal:.1f} MiB", goal_met=statistics.median(peaks) <= goal),
        metric("Redis used_memory after the fill", afters, "MiB", higher_is_better=False,
               goal=f"<= {goal:.1f} MiB", goal_met=statistics.median(afters) <= goal),
        metric("most events Redis held (sampled)", [f["max_held"] for f in fills], "events",
               higher_is_better=False),
        metric(f"append rate ({CONCURRENCY} concurrent appends of {batch} events)", appends,
               "events/s"),
        metric("appender CPU per event", [f["append_cpu_s"] / f["n"] * 1e6 for f in fills],
               "us/event", higher_is_better=False),
        metric("archiving rate during the fill (its passes, sharing the cores)", archives,
               "events/s"),
        metric("archiving rate during the fill / append rate", ratios, "x"),
        *([metric(f"archiving a backlog of {fills[0]['backlog']['archived']:,} events (one "
                  "pass after the fill)", backlogs, "events/s",
                  ratio=round(statistics.median(backlogs) / statistics.median(appends), 2),
                  ratio_to="append rate (medians)", goal=">= 1x the append rate",
                  goal_met=statistics.median(backlogs) >= statistics.median(appends))]
          if backlogs else []),
        metric("archiver CPU per event", [f["archiver"]["cpu_s"]
                                          / max(f["archiver"]["archived"], 1) * 1e6
                                          for f in fills], "us/event", higher_is_better=False),
    ]


async def fills_only(args: argparse.Namespace, n: int) -> None:
    """``--fill-only``: the fill ``--reps`` times, each on a fresh server."""
    fills = []
    for rep in range(args.reps):
        with valkey_server() as server, scratch_dir("archive") as work:
            print(f"fill {rep + 1}/{args.reps}: {n:,} events with the archiver running "
                  f"(hot window {HOT:,})...", flush=True)
            fills.append(await fill(server.url, n, work, HOT, batch=args.batch))
            print("  " + peak_breakdown(fills[-1]["detail"]), flush=True)
            fills[-1]["backlog"] = await backlog_pass(server.url, str(work / "archive"))
    samples = fills[0]["samples"]
    early = [x for x in samples if 0 < x[0] <= HOT]
    slope = (early[-1][1] - samples[0][1]) / early[-1][0] if early else 0.0
    png = ROOT / "artifacts" / "bench" / f"archive-fill-memory-{n:_}.png"
    plotted = plot(samples, slope, samples[0][1], png)
    print_table(f"tiered log fill, {n:,} events, hot window {HOT:,}",
                fill_metrics(fills, args.batch))
    emit("archive-fill", fill_metrics(fills, args.batch), args, events=n,
         plot=str(png) if plotted else None,
         fills=[{k: v for k, v in f.items() if k != "samples"} for f in fills],
         samples=[[[x, m] for x, m in f["samples"]] for f in fills])


async def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", type=int, default=None,
                            help="events to append (default 10M, 1M with --quick)")
        parser.add_argument("--hot", type=int, default=HOT, help="hot window (events)")
        parser.add_argument("--batch", type=int, default=BATCH,
                            help=f"events of one thread per append during the fill (default "
                                 f"{BATCH}; 1: append_one calls)")
        parser.add_argument("--rebuild-reps", type=int, default=None,
                            help="rebuilds of each kind (default --reps with --quick, else 1)")
        parser.add_argument("--fill-only", action="store_true",
                            help="only the fill (memory, append and archiving rates), --reps "
                                 "times, each on a fresh server; no replay, rebuild or serve")

    args = bench_args(__doc__.splitlines()[0], add=extra)
    n = args.events or (1_000_000 if args.quick else 10_000_000)
    k = 200_000 if args.quick else 1_000_000
    global HOT, GOAL_BYTES
    HOT = args.hot
    GOAL_BYTES = HOT * 600 + 64 * 2**20
    if args.fill_only:
        await fills_only(args, n)
        return
    with valkey_server() as server, scratch_dir("archive") as work:
        print(f"filling {n:,} events with the archiver running (hot window {HOT:,})...",
              flush=True)
        f = await fill(server.url, n, work, HOT, batch=args.batch)
        print("  " + peak_breakdown(f["detail"]), flush=True)
        samples = f["samples"]
        early = [s for s in samples if 0 < s[0] <= HOT]
        slope = (early[-1][1] - samples[0][1]) / early[-1][0] if early else 0.0
        peak = max(m for _, m in samples)
        after_fill = samples[-1][1]
        png = ROOT / "artifacts" / "bench" / (
            "archive-memory.png" if n == 10_000_000 else f"archive-memory-{n:_}.png")
        plotted = plot(samples, slope, samples[0][1], png)
        a = f["archiver"]
        archive_dir = str(work / "archive")
        k = min(k, Archive.open(archive_dir).count(0))
        print("copying the whole log into one Redis stream (today's layout)...", flush=True)
        copied = await copy_log(server.url, archive_dir, "bench", "copy")
        redis_runs, archive_runs, batch_runs, tiered_runs = [], [], [], []
        redis_cpu, archive_cpu = [], []
        for _ in range(args.reps):
            rate, cpu = await replay_redis(server.url, k)
            redis_runs.append(rate)
            redis_cpu.append(cpu)
            tiered_runs.append(await replay_store(server.url, "bench", archive_dir, k))
            rate, cpu = await asyncio.to_thread(replay_archive, archive_dir, k)
            archive_runs.append(rate)
            archive_cpu.append(cpu)
            batch_runs.append(await asyncio.to_thread(batches_archive, archive_dir, k))
        tiered_env = cli_env(server.url, "bench", work / "data-tiered", archive_dir, HOT)
        redis_env = cli_env(server.url, "copy", work / "data-redis", str(work / "no-archive"),
                            0)
        rebuilds: dict[str, list[dict[str, Any]]] = {"tiered": [], "redis": []}
        for _ in range(args.rebuild_reps or (args.reps if args.quick else 1)):
            print("rebuilding from the archive, then from the Redis copy...", flush=True)
            rebuilds["tiered"].append(await asyncio.to_thread(timed_rebuild, tiered_env))
            rebuilds["redis"].append(await asyncio.to_thread(timed_rebuild, redis_env))
        hot_cursor = Archive.open(archive_dir).newest(0)
        print("starting chatlog serve...", flush=True)
        k_http = min(k, 200_000)  # HTTP paging is the slow part: the same count each way
        serves = await serve_phase(tiered_env, args.reps,
                                   (k_http, hot_cursor, min(k_http, int(f["hot_len"]))))
        fresh = await asyncio.to_thread(
            serve_start, cli_env(server.url, "bench", work / "data-fresh", archive_dir, HOT))
        print("archiving a backlog of the hot tail in one pass...", flush=True)
        backlog = await backlog_pass(server.url, archive_dir)
    append_rate = f["n"] / f["append_s"]
    results = [
        metric("Redis used_memory, peak during the fill", [peak / 2**20], "MiB",
               higher_is_better=False, goal=f"<= {GOAL_BYTES / 2**20:.0f} MiB",
               goal_met=peak <= GOAL_BYTES),
        metric("Redis used_memory after the fill", [after_fill / 2**20], "MiB",
               higher_is_better=False, goal=f"<= {GOAL_BYTES / 2**20:.0f} MiB",
               goal_met=after_fill <= GOAL_BYTES),
        metric(f"Redis memory per event without archiving (first {HOT:,})", [slope], "B/event",
               higher_is_better=False),
        metric(f"append rate ({CONCURRENCY} concurrent append_one)" if args.batch <= 1 else
               f"append rate ({CONCURRENCY} concurrent appends of {args.batch} events)",
               [append_rate], "events/s"),
        metric("appender CPU per event", [f["append_cpu_s"] / f["n"] * 1e6], "us/event",
               higher_is_better=False),
        metric("archiving rate during the fill (its passes, sharing the cores)",
               [a["archived"] / a["wall_s"] if a["wall_s"] else 0.0], "events/s",
               ratio=round((a["archived"] / a["wall_s"]) / append_rate, 2) if a["wall_s"]
               else None, ratio_to="append rate"),
        metric(f"archiving a backlog of {backlog['archived']:,} events (one pass, "
               "nothing else running)", [backlog_rate(backlog)], "events/s",
               ratio=round(backlog_rate(backlog) / append_rate, 2), ratio_to="append rate",
               goal=">= 1x the append rate", goal_met=backlog_rate(backlog) >= append_rate),
        metric("archiver CPU per event, backlog pass",
               [backlog["cpu_s"] / max(backlog["archived"], 1) * 1e6], "us/event",
               higher_is_better=False),
        metric("archiver CPU per event", [a["cpu_s"] / max(a["archived"], 1) * 1e6],
               "us/event", higher_is_better=False),
        metric(f"replay {k:,} events from Redis (EventStore.read_flat, XRANGE)", redis_runs,
               "events/s"),
        metric(f"replay {k:,} events from the archive (Archive.read_flat)", archive_runs,
               "events/s", ratio=round(statistics.median(archive_runs)
                                       / statistics.median(redis_runs), 2),
               ratio_to="Redis replay (medians)", goal=">= 1x",
               goal_met=statistics.median(archive_runs) >= statistics.median(redis_runs)),
        metric("replay from Redis: CPU per event (client + server)", redis_cpu, "us/event",
               higher_is_better=False),
        metric("replay from the archive: CPU per event", archive_cpu, "us/event",
               higher_is_better=False,
               ratio=round(statistics.median(redis_cpu) / statistics.median(archive_cpu), 2),
               ratio_to="Redis CPU per event / archive CPU per event (medians)"),
        metric(f"scan {k:,} events from the archive (iter_batches, columnar)", batch_runs,
               "events/s"),
        metric(f"replay {k:,} events through the tiered EventStore.read_flat (archive tier)",
               tiered_runs, "events/s",
               ratio=round(statistics.median(tiered_runs) / statistics.median(redis_runs), 2),
               ratio_to="Redis replay (medians)", goal=">= 1x",
               goal_met=statistics.median(tiered_runs) >= statistics.median(redis_runs)),
        *rebuild_metrics(rebuilds, copied),
        *serve_metrics(serves, fresh),
    ]
    print_table(f"tiered log, {f['n']:,} events, hot window {HOT:,}", results)
    emit("archive", results, args, events=f["n"], hot_len=f["hot_len"],
         archived=a["archived"], archiver_passes=a["passes"], rebuilds=rebuilds,
         detail=f["detail"],
         serves=serves, fresh_serve=fresh,
         plot=str(png) if plotted else None,
         samples=[[x, m] for x, m in samples])


if __name__ == "__main__":
    asyncio.run(main())
