"""``chatlog rebuild`` A/B: two source trees rebuilding the same tiered log, alternately.

The log is ``bench_archive.py``'s (``--events`` message events appended with the
archiver running, hot window 200,000; then the whole log copied into one Redis
stream, today's layout). It is kept in ``--fixture DIR`` when given, so later runs
reuse it (the Valkey is started again on its AOF).

Each repetition, in turn: the tiered rebuild (archive + hot tail) with tree A, then
with tree B, then the Redis-only (XRANGE) rebuild with A, then with B, each a real
``python -m chatlog rebuild -q`` child with its wall time, CPU time and peak RSS; plus
SQLite's ceiling for the same rows with the same settings (``_rebuild_ceiling``: the
log's rows folded untimed, then written and indexed exactly as the rebuild writes
them, timed alone). Reports events/s best and median of each, CPU per event, and the
same-run ratios.

``.venv/bin/python bench/bench_rebuild_ab.py --old /tmp/old/src [--fixture DIR]``
(``--old``: the ``src`` directory of the tree to compare against, e.g. from
``git archive main src | tar -x -C /tmp/old``; B is this checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _archive_fill import fill
from _archive_phases import cli_env, copy_log, timed_rebuild
from _common import ROOT, bench_args, emit, metric, print_table, scratch_dir
from _rebuild_ceiling import sqlite_ceiling
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.embedded import EmbeddedValkey

HOT = 200_000


async def _ensure_log(url: str, work: Path, n: int) -> int:
    """Fill (once) and copy the log; the number of events in it."""
    done = work / "filled"
    if not done.exists():
        print(f"filling {n:,} events with the archiver running (hot window {HOT:,})...",
              flush=True)
        await fill(url, n, work, HOT)
        print("copying the whole log into one Redis stream (today's layout)...", flush=True)
        copied = await copy_log(url, str(work / "archive"), "bench", "copy")
        done.write_text(str(copied))
    return int(done.read_text())


def _settle() -> None:
    os.sync()
    time.sleep(0.5)


def _run(env: dict[str, str], src: Path, data: Path) -> dict[str, Any]:
    _settle()
    return timed_rebuild({**env, "PYTHONPATH": str(src), "CHATLOG_DATA_DIR": str(data)})


def _rates(n: int, runs: list[dict[str, Any]]) -> list[float]:
    return [n / r["seconds"] for r in runs]


def _cpu(n: int, runs: list[dict[str, Any]]) -> list[float]:
    """CPU (user + system, every thread) per event, in microseconds."""
    return [1e6 * r["cpu_s"] / n for r in runs]


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--old", required=True, help="tree A's src directory")
        parser.add_argument("--fixture", default=None,
                            help="keep (and reuse) the filled log in this directory")
        parser.add_argument("--no-redis", action="store_true",
                            help="skip the Redis-only rebuilds")

    args = bench_args(__doc__.splitlines()[0], add=extra)
    reps = args.reps or 3
    old, new = Path(args.old).resolve(), ROOT / "src"
    with scratch_dir("rebuild-ab") as scratch:
        work = Path(args.fixture).resolve() if args.fixture else scratch
        work.mkdir(parents=True, exist_ok=True)
        server = EmbeddedValkey(work / "valkey")
        server.start(timeout=300)
        try:
            n = asyncio.run(_ensure_log(server.url, work, args.events))
            archive = str(work / "archive")
            archived = Archive.open(archive).count(0)
            tiered = cli_env(server.url, "bench", scratch, archive, HOT)
            redis = cli_env(server.url, "copy", scratch, str(scratch / "no-archive"), 0)
            runs: dict[str, list[dict[str, Any]]] = {
                "tiered_a": [], "tiered_b": [], "redis_a": [], "redis_b": []}
            ceiling: list[dict[str, float]] = []
            for rep in range(reps):
                runs["tiered_a"].append(_run(tiered, old, scratch / f"ta{rep}"))
                runs["tiered_b"].append(_run(tiered, new, scratch / f"tb{rep}"))
                if not args.no_redis:
                    runs["redis_a"].append(_run(redis, old, scratch / f"ra{rep}"))
                    runs["redis_b"].append(_run(redis, new, scratch / f"rb{rep}"))
                _settle()
                ceiling.append(asyncio.run(sqlite_ceiling(
                    server.url, "bench", archive, scratch / f"ceiling{rep}.sqlite")))
                line = "  ".join(f"{k} {n / v[-1]['seconds']:,.0f}/s "
                                 f"({1e6 * v[-1]['cpu_s'] / n:.1f} us CPU/event, "
                                 f"{v[-1]['peak_rss_mb']:.0f} MiB)"
                                 for k, v in runs.items() if v)
                print(f"rep {rep + 1}: {line}  sqlite ceiling "
                      f"{ceiling[-1]['rows_per_s']:,.0f} rows/s "
                      f"({ceiling[-1]['cpu_us_per_row']:.1f} us CPU/row, indexes "
                      f"{ceiling[-1]['index_s']:.2f} s); load {os.getloadavg()[0]:.1f}",
                      flush=True)
        finally:
            server.stop()
    ta, tb = _rates(n, runs["tiered_a"]), _rates(n, runs["tiered_b"])
    rows = [
        metric(f"SQLite alone: the same {n:,} rows written + indexed as the rebuild does "
               "(ceiling)", [c["rows_per_s"] for c in ceiling], "rows/s"),
        metric("SQLite alone: CPU per row", [c["cpu_us_per_row"] for c in ceiling], "us",
               higher_is_better=False),
        metric("A: tiered rebuild CPU per event", _cpu(n, runs["tiered_a"]), "us",
               higher_is_better=False),
        metric("B: tiered rebuild CPU per event", _cpu(n, runs["tiered_b"]), "us",
               higher_is_better=False),
        metric("A: chatlog rebuild from archive + hot tail", ta, "events/s"),
        metric("B: chatlog rebuild from archive + hot tail", tb, "events/s",
               ratio=round(statistics.median(tb) / statistics.median(ta), 2),
               ratio_to="A's tiered rebuild (medians)"),
        metric("A: tiered rebuild peak RSS", [r["peak_rss_mb"] for r in runs["tiered_a"]],
               "MiB", higher_is_better=False),
        metric("B: tiered rebuild peak RSS", [r["peak_rss_mb"] for r in runs["tiered_b"]],
               "MiB", higher_is_better=False, goal="< 500 MB",
               goal_met=max(r["peak_rss_mb"] for r in runs["tiered_b"]) < 500),
    ]
    if not args.no_redis:
        ra, rb = _rates(n, runs["redis_a"]), _rates(n, runs["redis_b"])
        med = statistics.median
        rows += [
            metric("A: chatlog rebuild, Redis only (XRANGE)", ra, "events/s"),
            metric("A: Redis-only rebuild CPU per event", _cpu(n, runs["redis_a"]), "us",
                   higher_is_better=False),
            metric("B: Redis-only rebuild CPU per event", _cpu(n, runs["redis_b"]), "us",
                   higher_is_better=False),
            metric("B: chatlog rebuild, Redis only (XRANGE)", rb, "events/s",
                   ratio=round(med(rb) / med(ra), 2), ratio_to="A's Redis-only (medians)"),
            metric("B tiered / A Redis-only (the issue's ratio)", tb, "events/s",
                   ratio=round(med(tb) / med(ra), 2),
                   ratio_to="A's Redis-only rebuild (medians)",
                   goal=">= 150,000 events/s and >= 1.5x",
                   goal_met=med(tb) >= 150_000 and med(tb) / med(ra) >= 1.5),
            metric("B tiered / B Redis-only", tb, "events/s",
                   ratio=round(med(tb) / med(rb), 2),
                   ratio_to="B's Redis-only rebuild (medians)"),
        ]
    print_table(f"chatlog rebuild A/B, {n:,} events ({archived:,} archived, the rest hot);"
                f" A = {old}, B = {new}", rows)
    emit("rebuild-ab", rows, args, events=n, archived=archived, runs=runs)


if __name__ == "__main__":
    main()
