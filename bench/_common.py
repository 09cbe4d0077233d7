"""Helpers shared by every benchmark in ``bench/`` (the convention is in bench/README.md).

A benchmark script does, in short::

    from _common import bench_args, valkey_server, run_for, metric, print_table, emit

    args = bench_args("what this measures")           # --quick, --reps, --duration
    with valkey_server() as server:                    # fresh embedded-default Valkey
        runs = [asyncio.run(measure(server.url, args.duration)).per_s
                for _ in range(args.reps)]
    results = [metric("appends", runs, "events/s")]
    print_table("title", results)
    emit("name", results, args)                        # the last stdout line: JSON

Everything here measures wall-clock time with ``time.perf_counter``; figures
are only comparable within one run (the machine is shared), which is why each
benchmark measures its ceiling beside itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _table import format_table
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore import EmbeddedValkey
from chatlog.identity import normalize_project_id

ROOT = Path(__file__).resolve().parents[1]

# -- arguments ------------------------------------------------------------------


def bench_args(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    add: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse the options every benchmark accepts (and any ``add`` adds).

    ``--quick``: a smaller, faster run (smoke test, CI); each bench chooses its
    smaller sizes from ``args.quick``. ``--reps`` repetitions of each
    measurement (report best and median); ``--duration`` seconds per
    measurement for time-boxed ones.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions per measurement (default 3, 2 with --quick)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per time-boxed measurement (default 3, 0.5 with --quick)")
    if add is not None:
        add(parser)
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 3
    if args.duration is None:
        args.duration = 0.5 if args.quick else 3.0
    if args.reps < 1 or args.duration <= 0:
        parser.error("--reps must be 1 or more and --duration positive")
    return args


# -- servers and scratch space ----------------------------------------------------


@contextlib.contextmanager
def scratch_dir(name: str = "bench") -> Iterator[Path]:
    """A fresh directory under /tmp (short, so unix socket paths fit), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"chatlog-{name}-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def valkey_server(*, port: int | None = None) -> Iterator[EmbeddedValkey]:
    """A fresh Valkey from the bundled binary with the embedded default's settings.

    That is ``appendonly yes``, ``appendfsync always`` and a unix socket (or a
    loopback ``port``): what ``chatlog serve`` runs on by default. Stopped (by
    its own pid) and its data removed on exit.
    """
    with scratch_dir("valkey") as path:
        server = EmbeddedValkey(path / "valkey", port=port)
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def reset_server(url: str) -> None:
    """Empty the server between measurements (untimed): FLUSHALL, then compact the AOF.

    So each measurement starts from an empty keyspace and a small AOF, and a
    rewrite left over from the previous measurement does not run under the next.
    """
    r = aioredis.from_url(url)
    try:
        await r.flushall()
        with contextlib.suppress(Exception):  # a rewrite may already be running
            await r.bgrewriteaof()
        for _ in range(600):
            info = await r.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get(
                "aof_rewrite_scheduled"
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()


async def server_cpu_seconds(url: str) -> float:
    """CPU seconds (user + system, all threads) the server at ``url`` has used so far."""
    r = aioredis.from_url(url)
    try:
        info = await r.info("cpu")
    finally:
        await r.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def server_info(url: str) -> dict[str, Any]:
    """Version, fsync policy and RSS of the server at ``url``."""
    r = aioredis.from_url(url)
    try:
        info = await r.info()
        conf = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (await r.config_get("appendfsync")).items()
        }
        fsync = str(conf.get("appendfsync", ""))
    finally:
        await r.aclose()
    return {
        "server": "valkey" if "valkey_version" in info else "redis",
        "version": str(info.get("valkey_version") or info.get("redis_version")),
        "appendonly": bool(info.get("aof_enabled")),
        "appendfsync": fsync,
        "rss_mb": round(int(info.get("used_memory_rss", 0)) / 2**20, 1),
    }


# -- payloads ------------------------------------------------------------------

PROJECT = normalize_project_id("Bench-Project")
_WORDS = (
    "the agent summarised the build log and found that the flaky test waits on a "
    "socket that is never opened because the fixture starts the server too late so "
    "we move the start into the session fixture and retry the job once more "
).split()


def sample_content(n: int = 200, seed: int = 0) -> str:
    """About ``n`` characters of plausible chat text (deterministic per ``seed``)."""
    words: list[str] = []
    size = 0
    i = seed
    while size < n:
        w = _WORDS[i % len(_WORDS)]
        words.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(words)[:n]


def message_data(i: int = 0, thread_id: str = "thread-bench-0") -> MessageAppended:
    """A realistic chat message: ~200 characters of content and some metadata."""
    return MessageAppended(
        thread_id=thread_id,
        role="assistant" if i % 2 else "user",
        content=sample_content(200, seed=i),
        metadata={"model": "gpt-bench-1", "tokens": 48 + i % 50, "run_id": "run-0042"},
    )


def message_event(i: int = 0, thread_id: str = "thread-bench-0") -> NewEvent:
    """``message_data`` as a NewEvent of thread ``thread_id`` in the bench project."""
    return NewEvent.of(
        message_data(i, thread_id),
        project=PROJECT.key,
        project_name=PROJECT.display,
        aggregate_type="thread",
        aggregate_id=thread_id,
    )


def thread_ids(n: int) -> list[str]:
    return [f"thread-{uuid.UUID(int=k + 1)}" for k in range(n)]


# -- timing --------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """``ops`` operations in ``seconds`` of wall time, using ``cpu_s`` of this process's CPU
    (and ``server_cpu_s`` of the server's, when measured). CPU per operation is steadier
    than wall time on a busy machine."""

    ops: int
    seconds: float
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_s / self.ops * 1e6 if self.ops else 0.0

    @property
    def server_cpu_us_per_op(self) -> float:
        return self.server_cpu_s / self.ops * 1e6 if self.ops else 0.0


async def run_for(duration: float, step: Callable[[], Awaitable[int]]) -> Rate:
    """Await ``step()`` (which returns how many operations it did) until ``duration`` is up."""
    ops = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + duration
    now = start
    while now < deadline:
        ops += await step()
        now = time.perf_counter()
    return Rate(ops, now - start, time.process_time() - cpu)


def run_for_sync(duration: float, step: Callable[[], int]) -> Rate:
    """:func:`run_for` for blocking code."""
    ops = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + duration
    now = start
    while now < deadline:
        ops += step()
        now = time.perf_counter()
    return Rate(ops, now - start, time.process_time() - cpu)


class Latencies:
    """Collects durations (seconds); ``with lat.timed(): ...`` records one."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.samples.append(time.perf_counter() - t0)

    def summary_ms(self, ps: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
        return {k: round(v * 1000, 3) for k, v in percentiles(self.samples, ps).items()}


def percentiles(samples: Sequence[float], ps: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles, keyed ``"p50"`` etc. (plus ``"max"``); empty → {}."""
    if not samples:
        return {}
    data = sorted(samples)
    out: dict[str, float] = {}
    for p in ps:
        rank = max(1, min(len(data), int(-(-p * len(data) // 100))))
        out[f"p{p:g}"] = data[rank - 1]
    out["max"] = data[-1]
    return out


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of ``pid`` (default: this process) in MiB, from /proc."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# -- results -------------------------------------------------------------------


def metric(
    name: str,
    runs: Sequence[float],
    unit: str,
    *,
    higher_is_better: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One result row from the figures of each repetition.

    ``value`` is the best run (least disturbed by the shared machine),
    ``median`` the median; ``extra`` adds fields such as ``ratio``, ``ratio_to``,
    ``goal`` (text) and ``goal_met`` (bool), which run.py's summary shows.
    """
    if not runs:
        raise ValueError(f"no runs for {name}")
    best = max(runs) if higher_is_better else min(runs)
    return {
        "metric": name,
        "value": round(best, 3),
        "median": round(statistics.median(runs), 3),
        "unit": unit,
        "runs": [round(r, 3) for r in runs],
        **extra,
    }


def print_table(title: str, results: Sequence[dict[str, Any]]) -> None:
    """Print result rows (from :func:`metric`) as an aligned table."""
    extra = [k for k in ("ratio_best", "cpu_ratio") if any(k in r for r in results)]
    headers = ["metric", "best", "median", "unit", "ratio", *extra, "goal", "met"]
    rows = [
        [
            r["metric"],
            r["value"],
            r.get("median"),
            r["unit"],
            r.get("ratio"),
            *(r.get(k) for k in extra),
            r.get("goal", ""),
            r.get("goal_met"),
        ]
        for r in results
    ]
    print(f"\n{title}", flush=True)
    print(format_table(headers, rows), flush=True)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def emit(name: str, results: Sequence[dict[str, Any]], args: argparse.Namespace,
         **extra: Any) -> None:
    """Print the one JSON line that must be the last line of a benchmark's stdout."""
    line = {
        "name": name,
        "quick": bool(args.quick),
        "reps": args.reps,
        "results": list(results),
        "env": environment(),
        **extra,
    }
    sys.stdout.flush()
    print(json.dumps(line, default=str), flush=True)
