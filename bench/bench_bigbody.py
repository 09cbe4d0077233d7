"""``/healthz`` latency while legal 1 MB bodies of half a million tiny JSON values are
posted to a real ``chatlog serve`` (issue 15 #9: such a body must not block the loop).

Two posters send the pathological body back to back; one prober asks ``/healthz``
every 10 ms and records each answer's latency. Reported: the probe's max and p99
with the posters running, beside the same probe with no posters, and the same
posters against a bare aiohttp server that only reads each body (the ceiling:
what aiohttp itself costs; the ratio is chatlog's max to it, per repetition).
Goal: max < 50 ms. Run alone: ``.venv/bin/python bench/bench_bigbody.py [--quick]``;
``--endpoint workflows`` posts the tiny values as a workflow's ``input`` (create),
``--endpoint jobs`` as a job's ``payload`` (enqueue), instead of a message's metadata;
``workflow-start`` / ``workflow-complete`` as a start's input / a result;
``workflow-get`` and ``jobs-list`` read a big workflow / three big jobs back;
``sse`` posts big messages while two SSE readers receive each of them.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from _common import bench_args, emit, metric, percentiles, print_table, scratch_dir

CHATLOG = str(Path(sys.executable).parent / "chatlog")
_VALUES = b'{"a": [' + b",".join([b"0"] * 520_000) + b"]}"
JSON = {"Content-Type": "application/json"}
_MESSAGE = b'{"role": "user", "content": "x", "metadata": ' + _VALUES + b"}"


async def _send(http: Any, method: str, path: str, body: bytes | None = None) -> bytes:
    """One request; its answer's body (a non-2xx answer stops the run)."""
    async with http.request(method, path, data=body, headers=JSON) as r:
        doc = await r.read()
        if r.status >= 300:
            raise SystemExit(f"{method} {path} answered {r.status}: {doc[:200]!r}")
        return doc


async def _workflow(http: Any, *, start: bytes = b"{}") -> str:
    wid = f"wf-{uuid.uuid4()}"
    await _send(http, "POST", "/v1/projects/Big/workflows",
                b'{"workflow_id": "%s"}' % wid.encode())
    await _send(http, "POST", f"/v1/projects/Big/workflows/{wid}/start", start)
    return wid


async def _start(http: Any) -> None:
    await _workflow(http, start=b'{"input": ' + _VALUES + b"}")


async def _complete(http: Any) -> None:
    wid = await _workflow(http)
    await _send(http, "POST", f"/v1/projects/Big/workflows/{wid}/complete",
                b'{"result": ' + _VALUES + b"}")


async def _setup_get(http: Any) -> None:
    await _send(http, "POST", "/v1/projects/Big/workflows",
                b'{"workflow_id": "wf-big", "input": ' + _VALUES + b"}")


async def _setup_jobs(http: Any) -> None:
    for i in range(3):
        await _send(http, "POST", "/v1/projects/Big/jobs",
                    b'{"kind": "big", "job_id": "big-%d", "payload": ' % i + _VALUES + b"}")


async def _nothing(http: Any) -> None:
    return None


def _post(path: str, body: bytes) -> Callable[[Any], Awaitable[Any]]:
    return lambda http: _send(http, "POST", path, body)


def _get(path: str) -> Callable[[Any], Awaitable[Any]]:
    return lambda http: _send(http, "GET", path)


@dataclass(frozen=True)
class Load:
    """What the posters do, once the setup has run; ``sse``: readers of the event stream."""

    act: Callable[[Any], Awaitable[Any]]
    setup: Callable[[Any], Awaitable[None]] = _nothing
    sse: int = 0


#: endpoint -> the load (1 MB bodies or values of half a million tiny values)
ENDPOINTS = {
    "messages": Load(_post("/v1/projects/Big/messages", _MESSAGE)),
    "workflows": Load(_post("/v1/projects/Big/workflows",
                            b'{"name": "big", "input": ' + _VALUES + b"}")),
    "jobs": Load(_post("/v1/projects/Big/jobs", b'{"kind": "big", "payload": ' + _VALUES + b"}")),
    "workflow-start": Load(_start),
    "workflow-complete": Load(_complete),
    "workflow-get": Load(_get("/v1/projects/Big/workflows/wf-big"), _setup_get),
    "jobs-list": Load(_get("/v1/projects/Big/jobs?limit=3"), _setup_jobs),
    # Big messages posted while two SSE readers of the project receive each of them.
    "sse": Load(_post("/v1/projects/Big/messages", _MESSAGE), sse=2),
}


#: A bare aiohttp server (the ceiling: what aiohttp itself costs the loop for these
#: bodies): reads each POST's body whole and answers 201; answers each GET with a
#: 1 MB body; its event stream sends each POSTed body to every reader.
BARE = """
import asyncio
from aiohttp import web

BIG = b'{"a": [' + b",".join([b"0"] * 520_000) + b"]}"
readers = set()

async def post(request):
    body = await request.read()
    for queue in readers:
        queue.put_nowait(body)
    return web.json_response({}, status=201)

async def get(request):
    return web.Response(body=BIG, content_type="application/json")

async def stream(request):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    queue = asyncio.Queue()
    readers.add(queue)
    try:
        while True:
            await response.write(b"data: " + await queue.get() + b"\\n\\n")
    finally:
        readers.discard(queue)

async def health(request):
    return web.json_response({"status": "ok"})

app = web.Application(client_max_size=2**21)
app.add_routes([web.get("/healthz", health), web.get("/v1/events/stream", stream),
                web.post("/{tail:.*}", post), web.get("/{tail:.*}", get)])

async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port} ", flush=True)
    await asyncio.Event().wait()

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


async def _read_stream(http: Any, stop: float, got: list[int]) -> None:
    """An SSE reader of project Big: reads (and counts the bytes of) what it is sent."""
    async with http.get("/v1/events/stream", params={"project": "Big"},
                        timeout=aiohttp.ClientTimeout(total=None)) as r:
        while time.perf_counter() < stop:
            try:
                chunk = await asyncio.wait_for(r.content.readany(), stop - time.perf_counter())
            except TimeoutError:
                return
            got.append(len(chunk))


async def _probe(url: str, duration: float, posters: int,
                 endpoint: str = "messages") -> dict[str, Any]:
    load = ENDPOINTS[endpoint]
    latencies: list[float] = []
    received: list[int] = []
    posted = 0
    async with aiohttp.ClientSession(url) as http:
        stop = time.perf_counter() + duration

        async def poster() -> None:
            nonlocal posted
            while time.perf_counter() < stop:
                await load.act(http)
                posted += 1

        async def prober() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with http.get("/healthz") as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        readers = [_read_stream(http, stop, received) for _ in range(load.sse if posters else 0)]
        await asyncio.gather(prober(), *(poster() for _ in range(posters)), *readers)
    return {"max_ms": max(latencies) * 1000,
            "p99_ms": percentiles(latencies, (99,))["p99"] * 1000, "posted": posted,
            "received_mb": sum(received) / 2**20}


async def _setup(url: str, endpoint: str) -> None:
    async with aiohttp.ClientSession(url) as http:
        await ENDPOINTS[endpoint].setup(http)


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], add=lambda p: p.add_argument(
        "--endpoint", choices=sorted(ENDPOINTS), default="messages",
        help="where the 1 MB values go: a message's metadata (default), a workflow's "
             "input (create, start), its result (complete), a job's payload (enqueue); "
             "or what reads them: GET workflow, list jobs, SSE readers of big messages"))
    endpoint = args.endpoint
    duration = 2.0 if args.quick else 6.0
    idle_max, idle_p99, busy_max, busy_p99, posted = [], [], [], [], []
    bare_max: list[float] = []
    received: list[float] = []
    with scratch_dir("bigbody") as tmp:
        proc, url = _serve(tmp / "data")
        bare, bare_url = _bare()
        try:
            asyncio.run(_setup(url, endpoint))
            asyncio.run(_probe(url, duration / 2, 1, endpoint))  # warm-up: the worker starts
            for _ in range(args.reps):
                idle = asyncio.run(_probe(url, duration / 2, 0))
                busy = asyncio.run(_probe(url, duration, 2, endpoint))
                bare_max.append(asyncio.run(_probe(bare_url, duration, 2, endpoint))["max_ms"])
                idle_max.append(idle["max_ms"])
                idle_p99.append(idle["p99_ms"])
                busy_max.append(busy["max_ms"])
                busy_p99.append(busy["p99_ms"])
                posted.append(busy["posted"])
                received.append(busy["received_mb"])
        finally:
            for p in (proc, bare):
                p.terminate()
                p.wait(timeout=30)
    results = [
        metric("/healthz max, no posters (ceiling)", idle_max, "ms", higher_is_better=False),
        metric("/healthz p99, no posters (ceiling)", idle_p99, "ms", higher_is_better=False),
        metric("/healthz max, bare aiohttp, 2 posters (ceiling)", bare_max, "ms",
               higher_is_better=False),
        metric(f"/healthz max, 2 posters of 1 MB values ({endpoint})", busy_max, "ms",
               higher_is_better=False, goal="< 50 ms", goal_met=min(busy_max) < 50,
               ratio=round(min(busy_max) / min(bare_max), 2),
               ratio_median=round(statistics.median(
                   b / c for b, c in zip(busy_max, bare_max, strict=True)), 2),
               ratio_to="bare aiohttp"),
        metric(f"/healthz p99, 2 posters of 1 MB values ({endpoint})", busy_p99, "ms",
               higher_is_better=False),
        metric("requests with a 1 MB value per run", [float(p) for p in posted], "requests"),
    ]
    if ENDPOINTS[endpoint].sse:
        results.append(metric("MB received by the SSE readers per run", received, "MB"))
    print_table(f"1 MB pathological values ({endpoint}) vs /healthz", results)
    emit("bigbody" if endpoint == "messages" else f"bigbody-{endpoint}", results, args)


if __name__ == "__main__":
    main()
