"""HTTP appends and SSE delivery of ``chatlog serve``, beside a bare aiohttp ceiling.

All in one run, on one fresh Valkey with the embedded default's settings:

- ceiling: a bare aiohttp handler (on the event loop ``chatlog serve`` runs on:
  uvloop when importable) that parses the same JSON body and answers
  a small JSON document (no Redis, no validation);
- ``POST /v1/projects/{p}/messages`` on a real ``chatlog serve`` (projector and
  orchestrator running in the same process, as deployed); goals, each the
  median over repetitions of a ratio to the bare run just before it: >= 0.5x
  the ceiling's requests/s, and p99 <= 1.5x the bare handler's p99;
- SSE: 500 subscribers of ``/v1/events/stream``; latency from sending an
  append until each subscriber has the event; goal: p99 < 50 ms.

The load generator (aiohttp client, 64 concurrent requests) runs in its own
process, so its CPU does not count against the server's; the SSE subscribers
run in two client processes of their own. Run alone:
``.venv/bin/python bench/bench_http.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    bench_args,
    emit,
    metric,
    percentiles,
    print_table,
    reset_server,
    scratch_dir,
    valkey_server,
)

HERE = Path(__file__).resolve()
CONTENT = re.compile(rb'"content":"sse-([0-9.]+)"')
CONCURRENCY = 64
SUBSCRIBERS = 500
BODY = {"thread_id": None, "role": "user", "content": "x" * 200, "metadata": {"agent": "bench"}}


# -- the processes ------------------------------------------------------------------


def _bare_server(port: int) -> None:
    """The ceiling: parse the JSON body, answer a small JSON document."""
    import uuid

    import orjson
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        answer = {"message_id": str(uuid.uuid4()), "thread_id": body.get("thread_id") or "t",
                  "position": "0-0", "version": 1}
        return web.Response(status=201, body=orjson.dumps(answer),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/projects/{project}/messages", handler)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    # On the loop chatlog serve runs on (uvloop when importable), so the ratio compares
    # the handlers, not the loops.
    from chatlog.tuning import serving_loop_factory

    factory = serving_loop_factory()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                loop=factory() if factory else None)


async def _load(url: str, duration: float, concurrency: int, warmup: float) -> dict[str, Any]:
    """``concurrency`` clients posting messages for ``duration`` s (after ``warmup`` s)."""
    import aiohttp

    path = f"{url}/v1/projects/Bench/messages"
    latencies: list[float] = []
    errors = 0
    sent = 0  # every request, warm-up included (what the server's CPU was spent on)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + duration

        async def worker() -> None:
            nonlocal errors, sent
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                async with http.post(path, json=BODY) as resp:
                    await resp.read()
                    ok = resp.status == 201
                t1 = time.perf_counter()
                sent += 1
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": len(latencies), "sent": sent, "errors": errors, "duration": duration,
            "per_s": len(latencies) / duration,
            **{k: v * 1000 for k, v in percentiles(latencies, (50, 99)).items()}}


async def _sse_subscribers(url: str, subscribers: int, appends: int, after: str) -> None:
    """One client process's share of the subscribers: prints ``ready`` once all are
    connected, then one JSON line of delivery latencies (ms) when all events came."""
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        ready = 0
        all_ready = asyncio.Event()

        async def subscriber() -> None:
            nonlocal ready
            async with http.get(f"{url}/v1/events/stream",
                                params={"project": "Sse", "after": after},
                                timeout=aiohttp.ClientTimeout(total=None)) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"SSE subscribe: {resp.status} {await resp.text()}")
                ready += 1
                if ready == subscribers:
                    all_ready.set()
                got = 0
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        now = time.perf_counter()
                        # The send time travels in the content (perf_counter is the
                        # system-wide monotonic clock); a cheap look, no JSON parse.
                        found = CONTENT.search(line)
                        if found:
                            latencies.append((now - float(found.group(1))) * 1000)
                        got += 1
                        if got >= appends:
                            return

        tasks = [asyncio.ensure_future(subscriber()) for _ in range(subscribers)]
        async with asyncio.timeout(60):
            await all_ready.wait()
        print("ready", flush=True)
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    print(json.dumps({"latencies": latencies}), flush=True)


async def _sse(url: str, subscribers: int, appends: int, rate: float,
               procs: int = 2) -> dict[str, Any]:
    """``subscribers`` SSE clients in ``procs`` processes; ``appends`` messages at ``rate``/s
    from this one; the latency from sending each append to each subscriber having it."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        # Live subscribers: they start after the log's current end (as a client
        # resuming from its last id would), not from the start of the log.
        async with http.post(f"{url}/v1/projects/SseWarm/messages",
                             json={"role": "user", "content": "warm"}) as resp:
            head = (await resp.json())["position"]
        share = [subscribers // procs + (i < subscribers % procs) for i in range(procs)]
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(HERE), "_ssesub", url, str(n), str(appends), head,
                stdout=subprocess.PIPE)
            for n in share
        ]
        for child in children:
            assert child.stdout is not None
            async with asyncio.timeout(90):
                line = await child.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"subscribers did not connect: {line!r}")
        await asyncio.sleep(0.5)
        for _ in range(appends):
            content = f"sse-{time.perf_counter():.6f}"
            async with http.post(f"{url}/v1/projects/Sse/messages",
                                 json={"role": "user", "content": content}) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1 / rate)
        latencies: list[float] = []
        for child in children:
            out, _ = await child.communicate()
            latencies += json.loads(out.decode().strip().splitlines()[-1])["latencies"]
    return {"deliveries": len(latencies), "expected": subscribers * appends,
            **percentiles(latencies, (50, 99))}


def _child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.PIPE,
                            text=True, env=env)


def _run_client(*args: str) -> dict[str, Any]:
    proc = _child(*args)
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


class Server:
    """A server process (bare or ``chatlog serve``) on a free loopback port."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system, all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def load(self, duration: float, warmup: float) -> dict[str, Any]:
        """The load generator against this server; its figures and the server's CPU
        per request (steadier than latency on a shared machine)."""
        cpu = self.cpu_s()
        run = _run_client("_load", self.url, str(duration), str(CONCURRENCY), str(warmup))
        run["server_cpu_us"] = (self.cpu_s() - cpu) / max(run["sent"], 1) * 1e6
        return run

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


async def _group_commit(valkey_url: str, data_dir: Path, duration: float) -> dict[str, Any]:
    """Appends per Redis round trip at 64 concurrent HTTP clients (the app in this
    process, so its store's round trips can be counted)."""
    from chatlog.eventstore import EventStore
    from chatlog.http import create_app, running
    from chatlog.http.app import build_services
    from chatlog.settings import Settings

    settings = Settings(redis_url=valkey_url, data_dir=data_dir)
    store = await EventStore.open(valkey_url)
    batches: list[int] = []
    run_scripts = store._appender._run_scripts

    async def counted(batch: list[Any]) -> list[Any]:
        batches.append(len(batch))
        return await run_scripts(batch)

    store._appender._run_scripts = counted  # type: ignore[method-assign]
    port = _free_port()
    try:
        app = create_app(settings, store, services=build_services(settings, store))
        async with running(app, "127.0.0.1", port):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE), "_load", f"http://127.0.0.1:{port}", str(duration),
                str(CONCURRENCY), "0.2", stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
    finally:
        await store.close()
    load = json.loads(out.decode().strip().splitlines()[-1])
    return {"appends": sum(batches), "round_trips": len(batches),
            "per_round_trip": sum(batches) / max(len(batches), 1),
            "largest": max(batches, default=0), "per_s": load["per_s"]}


def _free_port() -> int:
    from chatlog.eventstore.embedded import free_port

    return free_port()


def main() -> int:
    args = bench_args(__doc__.splitlines()[0])
    warmup = 0.2 if args.quick else 0.5
    subscribers = 100 if args.quick else SUBSCRIBERS
    appends = 20 if args.quick else 50
    bare_runs: list[dict[str, Any]] = []
    chat_runs: list[dict[str, Any]] = []
    sse_runs: list[dict[str, Any]] = []
    with valkey_server() as valkey, scratch_dir("http") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
        env.update(CHATLOG_REDIS_URL=valkey.url, CHATLOG_DATA_DIR=str(tmp / "data"),
                   CHATLOG_LOG_LEVEL="WARNING")
        chatlog = str(Path(sys.executable).parent / "chatlog")
        for _ in range(args.reps):
            bare = Server([sys.executable, str(HERE), "_bare", str(_free_port())])
            try:
                bare_runs.append(bare.load(args.duration, warmup))
            finally:
                bare.stop()
            asyncio.run(reset_server(valkey.url))
            serve = Server([chatlog, "serve", "--port", str(_free_port())], env=env)
            try:
                chat_runs.append(serve.load(args.duration, warmup))
                sse_runs.append(_run_client("_sse", serve.url, str(subscribers),
                                            str(appends), "20"))
            finally:
                serve.stop()
            for d in (tmp / "data",):
                for f in d.glob("readmodel.sqlite*"):
                    f.unlink()
        asyncio.run(reset_server(valkey.url))
        (tmp / "gc").mkdir()
        group = asyncio.run(_group_commit(valkey.url, tmp / "gc", args.duration))

    # Issue 18's goals, per repetition (the bare run and chatlog's ran back to back):
    # requests/s >= 0.5x bare aiohttp's, and p99 <= 1.5x the bare handler's p99.
    rate_ratios = [c["per_s"] / b["per_s"] if b["per_s"] else 0.0
                   for c, b in zip(chat_runs, bare_runs, strict=True)]
    p99_ratios = [c["p99"] / b["p99"] if b["p99"] else float("inf")
                  for c, b in zip(chat_runs, bare_runs, strict=True)]
    cpu_ratios = [c["server_cpu_us"] / b["server_cpu_us"] if b["server_cpu_us"] else 0.0
                  for c, b in zip(chat_runs, bare_runs, strict=True)]
    ratio = round(statistics.median(rate_ratios), 3)
    p99_ratio = round(statistics.median(p99_ratios), 3)
    sse_p99 = min(r["p99"] for r in sse_runs)
    results = [
        metric("bare aiohttp JSON handler (ceiling)", [r["per_s"] for r in bare_runs], "req/s"),
        metric("bare p50", [r["p50"] for r in bare_runs], "ms", higher_is_better=False),
        metric("bare p99", [r["p99"] for r in bare_runs], "ms", higher_is_better=False),
        metric("chatlog POST messages", [r["per_s"] for r in chat_runs], "req/s",
               ratio=ratio, ratio_best=round(max(rate_ratios), 3),
               ratio_to="bare aiohttp JSON handler (ceiling), same rep",
               goal=">= 0.5x", goal_met=ratio >= 0.5),
        metric("chatlog p50", [r["p50"] for r in chat_runs], "ms", higher_is_better=False),
        metric("bare server CPU per request", [r["server_cpu_us"] for r in bare_runs], "us",
               higher_is_better=False),
        metric("chatlog server CPU per request (projector included)",
               [r["server_cpu_us"] for r in chat_runs], "us", higher_is_better=False,
               ratio=round(statistics.median(cpu_ratios), 3),
               ratio_to="bare server CPU per request, same rep"),
        metric("chatlog p99", [r["p99"] for r in chat_runs], "ms", higher_is_better=False,
               ratio=p99_ratio, ratio_best=round(min(p99_ratios), 3),
               ratio_to="bare p99, same rep", goal="<= 1.5x bare p99",
               goal_met=p99_ratio <= 1.5),
        metric(f"SSE delivery p50 ({subscribers} subscribers)", [r["p50"] for r in sse_runs],
               "ms", higher_is_better=False),
        metric(f"SSE delivery p99 ({subscribers} subscribers)", [r["p99"] for r in sse_runs],
               "ms", higher_is_better=False, goal="< 50 ms", goal_met=sse_p99 < 50),
        metric("group commit: appends per Redis round trip", [group["per_round_trip"]],
               "appends", largest=group["largest"]),
    ]
    errors = sum(r["errors"] for r in chat_runs)
    missing = sum(r["expected"] - r["deliveries"] for r in sse_runs)
    print_table(f"HTTP appends at {CONCURRENCY} concurrent clients; SSE to {subscribers} "
                f"subscribers (errors {errors}, SSE deliveries missing {missing})", results)
    emit("http", results, args, concurrency=CONCURRENCY, subscribers=subscribers,
         append_errors=errors, sse_missing=missing, group_commit=group,
         median_ratio=round(statistics.median(r["per_s"] for r in chat_runs)
                            / statistics.median(r["per_s"] for r in bare_runs), 3))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        _bare_server(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        url, duration, conc, warm = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(
            sys.argv[5])
        print(json.dumps(asyncio.run(_load(url, duration, conc, warm))))
    elif len(sys.argv) > 1 and sys.argv[1] == "_ssesub":
        url, subs, n, after = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        asyncio.run(_sse_subscribers(url, subs, n, after))
    elif len(sys.argv) > 1 and sys.argv[1] == "_sse":
        url, subs, n, rate = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        print(json.dumps(asyncio.run(_sse(url, subs, n, rate))))
    else:
        sys.exit(main())
