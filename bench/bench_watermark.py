"""What the replicated high watermark costs readers: SSE delivery and a one-waiter wake-up.

On a 3-master Valkey cluster with one replica per master (every node
``appendonly yes``, ``appendfsync always``, loopback TCP), one real ``chatlog
serve`` process (4 partitions) per acknowledgement level, measured in the same
run, one after the other:

- ``ack=local``: readers read the log as the primary has it (the ceiling);
- ``ack=replicated``: every reader (SSE, the orchestrator's waits) stops at the
  partition's committed position, which moves after each successful ``WAIT``.

For each, one client at a time (``--samples``; 60, 25 with ``--quick``):

- **SSE delivery**: ``POST`` a message → the SSE subscriber on
  ``/v1/events/stream`` receives it (and, beside it, the ``POST`` answered);
- **one-waiter wake-up**: a long-poll ``GET …/workflows/{id}?wait_for=running``
  is blocked; ``POST …/start`` sent → the long-poll answered.

Reported: p50 and p99 of each, and ``replicated / local`` of the p99 (the cost
of the watermark), best and median over ``--reps`` (alternating which level
runs first).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from _common import bench_args, emit, format_table, metric, percentiles, scratch_dir
from chatlog.testing import LocalCluster

CHATLOG = str(Path(sys.executable).parent / "chatlog")
PARTITIONS = 4
LEVELS = ("local", "replicated")


class Serve:
    """``chatlog serve`` on the cluster at one ack level; stopped (SIGTERM, by pid) on exit."""

    def __init__(self, base: Path, cluster: LocalCluster, ack: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
        env.update(CHATLOG_REDIS_URL=cluster.url, CHATLOG_PARTITIONS=str(PARTITIONS),
                   CHATLOG_KEY_PREFIX=f"w{uuid.uuid4().hex[:8]}", CHATLOG_ACK=ack,
                   CHATLOG_ACK_REPLICAS="1", CHATLOG_LOG_LEVEL="WARNING")
        data = base / f"serve-{ack}-{uuid.uuid4().hex[:6]}"
        self.err = open(base / f"{data.name}.log", "wb")
        self.proc = subprocess.Popen([CHATLOG, "--data-dir", str(data), "serve", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.err, env=env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"serve did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split(" ", 1)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


async def sse_delivery(session: aiohttp.ClientSession, url: str,
                       samples: int) -> tuple[list[float], list[float]]:
    """(append sent → SSE received, append sent → append answered), ms, one at a time."""
    arrived: dict[str, float] = {}
    got = asyncio.Event()

    async def follow() -> None:
        async with session.get(f"{url}/v1/events/stream",
                               timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("data: "):
                    arrived[json.loads(line[6:])["id"]] = time.perf_counter()
                    got.set()

    reader = asyncio.create_task(follow())
    delivery: list[float] = []
    answered: list[float] = []
    try:
        await asyncio.sleep(0.3)  # the subscriber is connected and caught up (bench pacing)
        for i in range(samples + 3):
            eid = str(uuid.uuid4())
            start = time.perf_counter()
            async with session.post(f"{url}/v1/projects/bench-sse/messages", json={
                    "thread_id": "t", "role": "user", "content": f"m{i}",
                    "event_id": eid}) as resp:
                assert resp.status == 201, await resp.text()
            done = time.perf_counter()
            while eid not in arrived:
                got.clear()
                await asyncio.wait_for(got.wait(), 10)
            if i >= 3:
                delivery.append((arrived[eid] - start) * 1000)
                answered.append((done - start) * 1000)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return delivery, answered


async def one_waiter(session: aiohttp.ClientSession, url: str, samples: int) -> list[float]:
    """``POST …/start`` sent → the blocked ``wait_for=running`` long-poll answered, ms."""
    base = f"{url}/v1/projects/bench-waits/workflows"
    out: list[float] = []
    for i in range(samples + 3):
        async with session.post(base, json={"name": f"w{i}"}) as resp:
            assert resp.status == 201, await resp.text()
            wid = (await resp.json())["workflow_id"]

        async def poll(wid: str = wid) -> float:
            async with session.get(f"{base}/{wid}", params={"wait_for": "running",
                                                            "timeout": "10"}) as resp:
                doc = await resp.json()
                assert resp.status == 200 and doc["reached"], doc
            return time.perf_counter()

        waiting = asyncio.create_task(poll())
        await asyncio.sleep(0.05)  # the long-poll is blocked (bench pacing)
        start = time.perf_counter()
        async with session.post(f"{base}/{wid}/start", json={}) as resp:
            assert resp.status == 200, await resp.text()
        woken = await waiting
        if i >= 3:
            out.append((woken - start) * 1000)
    return out


async def measure(base: Path, cluster: LocalCluster, ack: str,
                  samples: int) -> dict[str, float]:
    serve = await asyncio.to_thread(Serve, base, cluster, ack)
    try:
        async with aiohttp.ClientSession() as session:
            delivery, answered = await sse_delivery(session, serve.url, samples)
            woken = await one_waiter(session, serve.url, samples)
    finally:
        await asyncio.to_thread(serve.stop)
    d, a, w = percentiles(delivery), percentiles(answered), percentiles(woken)
    return {"sse_p50": d["p50"], "sse_p99": d["p99"], "append_p50": a["p50"],
            "append_p99": a["p99"], "wake_p50": w["p50"], "wake_p99": w["p99"]}


async def main() -> None:
    args = bench_args(__doc__.splitlines()[0], add=lambda parser: parser.add_argument(
        "--samples", type=int, default=None, help="one-at-a-time samples per figure"))
    samples = args.samples or (25 if args.quick else 60)
    reps: list[dict[str, dict[str, float]]] = []
    with scratch_dir("watermark") as base:
        cluster = LocalCluster(base / "c", masters=3, replicas=1, fsync="always")
        try:
            cluster.start()
            for k in range(args.reps):
                order = LEVELS if k % 2 == 0 else LEVELS[::-1]
                rep = {ack: await measure(base, cluster, ack, samples) for ack in order}
                reps.append(rep)
                for ack in LEVELS:
                    r = rep[ack]
                    print(f"  rep {k + 1} ack={ack:<10}: SSE delivery p50 {r['sse_p50']:.2f} "
                          f"p99 {r['sse_p99']:.2f} ms (append answered p50 "
                          f"{r['append_p50']:.2f} p99 {r['append_p99']:.2f}) | one-waiter "
                          f"wake-up p50 {r['wake_p50']:.2f} p99 {r['wake_p99']:.2f} ms",
                          flush=True)
        finally:
            cluster.stop()
    results = []
    rows = []
    for figure, label in (("sse", "SSE delivery"), ("wake", "one-waiter wake-up")):
        ratios = [r["replicated"][f"{figure}_p99"] / r["local"][f"{figure}_p99"] for r in reps]
        for ack in LEVELS:
            p99s = [r[ack][f"{figure}_p99"] for r in reps]
            p50s = [r[ack][f"{figure}_p50"] for r in reps]
            results.append(metric(f"cluster 3+3, ack={ack}: {label} p99", p99s, "ms",
                                  higher_is_better=False,
                                  p50_ms=round(statistics.median(p50s), 2)))
            rows.append([label, ack, round(min(p50s), 2), round(statistics.median(p50s), 2),
                         round(min(p99s), 2), round(statistics.median(p99s), 2),
                         "" if ack == "local" else
                         f"{min(ratios):.2f} / {statistics.median(ratios):.2f}"])
        results.append(metric(f"cluster 3+3: {label} p99, replicated / local", ratios, "x",
                              higher_is_better=False, ratio_to="ack=local in the same rep"))
    print(format_table(["figure", "ack", "p50 best ms", "p50 median ms", "p99 best ms",
                        "p99 median ms", "p99 ratio to local, best / median"], rows))
    emit("watermark", results, args)


if __name__ == "__main__":
    asyncio.run(main())
