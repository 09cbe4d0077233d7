"""``/healthz`` latency while legal 1 MB bodies of half a million tiny JSON values are
posted to a real ``chatlog serve`` (issue 15 #9: such a body must not block the loop).

Two posters send the pathological body back to back; one prober asks ``/healthz``
every 10 ms and records each answer's latency. Reported: the probe's max and p99
with the posters running, beside the same probe with no posters, and the same
posters against a bare aiohttp server that only reads each body (the ceiling:
what aiohttp itself costs; the ratio is chatlog's max to it, per repetition).
Goal: max < 50 ms. Run alone: ``.venv/bin/python bench/bench_bigbody.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import bench_args, emit, metric, percentiles, print_table, scratch_dir

CHATLOG = str(Path(sys.executable).parent / "chatlog")
BODY = (b'{"role": "user", "content": "x", "metadata": {"a": ['
        + b",".join([b"0"] * 520_000) + b"]}}")


#: A bare aiohttp server: reads each body whole and answers 201, and ``/healthz``
#: (the ceiling: what aiohttp itself costs the loop for these bodies).
BARE = """
import sys
from aiohttp import web

async def post(request):
    await request.read()
    return web.json_response({}, status=201)

async def health(request):
    return web.json_response({"status": "ok"})

app = web.Application(client_max_size=2**21)
app.add_routes([web.post("/v1/projects/{p}/messages", post), web.get("/healthz", health)])

async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port} ", flush=True)
    import asyncio
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""


def _bare() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"the bare aiohttp server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split(" ", 1)[0]


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
    bare_max: list[float] = []
    with scratch_dir("bigbody") as tmp:
        proc, url = _serve(tmp / "data")
        bare, bare_url = _bare()
        try:
            asyncio.run(_probe(url, duration / 2, 1))  # warm-up: the parsing worker starts
            for _ in range(args.reps):
                idle = asyncio.run(_probe(url, duration / 2, 0))
                busy = asyncio.run(_probe(url, duration, 2))
                bare_max.append(asyncio.run(_probe(bare_url, duration, 2))["max_ms"])
                idle_max.append(idle["max_ms"])
                idle_p99.append(idle["p99_ms"])
                busy_max.append(busy["max_ms"])
                busy_p99.append(busy["p99_ms"])
                posted.append(busy["posted"])
        finally:
            for p in (proc, bare):
                p.terminate()
                p.wait(timeout=30)
    results = [
        metric("/healthz max, no posters (ceiling)", idle_max, "ms", higher_is_better=False),
        metric("/healthz p99, no posters (ceiling)", idle_p99, "ms", higher_is_better=False),
        metric("/healthz max, bare aiohttp, 2 posters (ceiling)", bare_max, "ms",
               higher_is_better=False),
        metric("/healthz max, 2 posters of 1 MB bodies", busy_max, "ms",
               higher_is_better=False, goal="< 50 ms", goal_met=min(busy_max) < 50,
               ratio=round(min(busy_max) / min(bare_max), 2),
               ratio_median=round(statistics.median(
                   b / c for b, c in zip(busy_max, bare_max, strict=True)), 2),
               ratio_to="bare aiohttp"),
        metric("/healthz p99, 2 posters of 1 MB bodies", busy_p99, "ms",
               higher_is_better=False),
        metric("1 MB bodies appended per run", [float(p) for p in posted], "bodies"),
    ]
    print_table("1 MB pathological bodies vs /healthz", results)
    emit("bigbody", results, args)


if __name__ == "__main__":
    main()
