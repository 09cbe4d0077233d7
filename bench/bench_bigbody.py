"""``/healthz`` latency while legal 1 MB bodies of half a million tiny JSON values are
posted to a real ``chatlog serve`` (issue 15 #9: such a body must not block the loop).

Two posters send the pathological body back to back; one prober asks ``/healthz``
every 10 ms and records each answer's latency. Reported: the probe's max and p99
with the posters running, beside the same probe with no posters (the ceiling).
Goal: max < 50 ms. Run alone: ``.venv/bin/python bench/bench_bigbody.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import bench_args, emit, metric, percentiles, print_table, scratch_dir

CHATLOG = str(Path(sys.executable).parent / "chatlog")
BODY = (b'{"role": "user", "content": "x", "metadata": {"a": ['
        + b",".join([b"0"] * 520_000) + b"]}}")


def _serve(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([CHATLOG, "--data-dir", str(data_dir), "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split(" ", 1)[0]


async def _probe(url: str, duration: float, posters: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    posted = 0
    async with aiohttp.ClientSession(url) as http:
        stop = time.perf_counter() + duration

        async def poster() -> None:
            nonlocal posted
            while time.perf_counter() < stop:
                async with http.post("/v1/projects/Big/messages", data=BODY,
                                     headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    posted += r.status == 201

        async def prober() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with http.get("/healthz") as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        await asyncio.gather(prober(), *(poster() for _ in range(posters)))
    return {"max_ms": max(latencies) * 1000,
            "p99_ms": percentiles(latencies, (99,))["p99"] * 1000, "posted": posted}


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    duration = 2.0 if args.quick else 6.0
    idle_max, idle_p99, busy_max, busy_p99, posted = [], [], [], [], []
    with scratch_dir("bigbody") as tmp:
        proc, url = _serve(tmp / "data")
        try:
            for _ in range(args.reps):
                idle = asyncio.run(_probe(url, duration / 2, 0))
                busy = asyncio.run(_probe(url, duration, 2))
                idle_max.append(idle["max_ms"])
                idle_p99.append(idle["p99_ms"])
                busy_max.append(busy["max_ms"])
                busy_p99.append(busy["p99_ms"])
                posted.append(busy["posted"])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results = [
        metric("/healthz max, no posters (ceiling)", idle_max, "ms", higher_is_better=False),
        metric("/healthz p99, no posters (ceiling)", idle_p99, "ms", higher_is_better=False),
        metric("/healthz max, 2 posters of 1 MB bodies", busy_max, "ms",
               higher_is_better=False, goal="< 50 ms", goal_met=min(busy_max) < 50),
        metric("/healthz p99, 2 posters of 1 MB bodies", busy_p99, "ms",
               higher_is_better=False),
        metric("1 MB bodies appended per run", [float(p) for p in posted], "bodies"),
    ]
    print_table("1 MB pathological bodies vs /healthz", results)
    emit("bigbody", results, args)


if __name__ == "__main__":
    main()
