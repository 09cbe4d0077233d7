"""A bounded soak of ``chatlog serve`` under faults (issue 15): not part of the test suite.

For ``--minutes`` (default 10), well-behaved clients append messages (each with
its own ``event_id``), page through replays and follow SSE streams, while a
fault schedule SIGSTOPs Valkey (then SIGCONT), SIGKILLs it (then restarts it on
the same data dir) and restarts ``chatlog serve``. Valkey runs as its own
process (``CHATLOG_REDIS_URL``), with the embedded default's ``appendfsync always``.

At the end every append whose outcome was unknown (504, or no answer because
serve was restarting) is retried with its ``event_id`` until answered, and the
log is read back from Valkey. Reported:

- acknowledged: appends answered 201/200;
- lost: acknowledged appends missing from the log (must be 0);
- duplicated: event ids or contents in the log more than once (must be 0);
- refused-but-written: appends answered 503 that are in the log (must be 0);
- unknown: appends answered 504 or not answered, and how many of them the log
  held before their retry;
- p50/p99 latency of answered requests of the well-behaved clients (appends and
  replay pages), over the whole run, faults included.

Run: ``.venv/bin/python bench/soak.py [--minutes M] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from _common import emit, metric, percentiles, print_table, scratch_dir
from chatlog.eventstore import EmbeddedValkey, EventStore

CHATLOG = str(Path(sys.executable).parent / "chatlog")
APPENDERS = 8
REPLAYERS = 2
SUBSCRIBERS = 2
PROJECTS = ["Soak-A", "Soak-B", "Soak-C"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``chatlog serve`` on a fixed port, restartable."""

    def __init__(self, data_dir: Path, redis_url: str, port: int, log: Path) -> None:
        self.data_dir, self.redis_url, self.port, self.log = data_dir, redis_url, port, log
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
        env.update(CHATLOG_REDIS_URL=self.redis_url, CHATLOG_OUTCOME_TIMEOUT="2",
                   CHATLOG_SSE_KEEPALIVE="1")
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [CHATLOG, "--data-dir", str(self.data_dir), "serve", "--port", str(self.port)],
                stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"serve did not start: {line!r}; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


class Soak:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = asyncio.Event()
        #: event_id -> (project, content, final status or None while unknown)
        self.appends: dict[str, tuple[str, str, int | None]] = {}
        self.unknown: set[str] = set()
        self.refused: set[str] = set()
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.sse_events = 0
        self.sse_duplicates = 0
        self.replay_pages = 0
        self.faults: Counter[str] = Counter()

    async def appender(self, http: Any, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            project = PROJECTS[i % len(PROJECTS)]
            event_id, content = str(uuid.uuid4()), f"a{n}-{i}"
            i += 1
            self.appends[event_id] = (project, content, None)
            status = await self._post(http, project, content, event_id)
            if status in (200, 201):
                self.appends[event_id] = (project, content, status)
            elif status == 503:
                self.refused.add(event_id)
            else:  # 504, or no answer (serve restarting): the outcome is unknown
                self.unknown.add(event_id)
                await asyncio.sleep(0.2)

    async def _post(self, http: Any, project: str, content: str, event_id: str) -> int | None:
        import aiohttp

        started = time.perf_counter()
        try:
            async with http.post(f"{self.url}/v1/projects/{project}/messages",
                                 json={"role": "u", "content": content, "event_id": event_id},
                                 timeout=aiohttp.ClientTimeout(total=30)) as resp:
                await resp.read()
                status = int(resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        self.statuses[status] += 1
        if status < 500:
            self.latencies.append(time.perf_counter() - started)
        return status

    async def replayer(self, http: Any, n: int) -> None:
        import aiohttp

        cursor = "0"
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                async with http.get(f"{self.url}/v1/events",
                                    params={"project": PROJECTS[n % len(PROJECTS)],
                                            "after": cursor, "limit": "200"},
                                    timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    body = await resp.read()
                    self.statuses[resp.status] += 1
                    if resp.status == 200:
                        self.latencies.append(time.perf_counter() - started)
                        page = json.loads(body)
                        cursor = page["cursor"] if page["has_more"] else "0"
                        self.replay_pages += 1
                        continue
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass
            await asyncio.sleep(0.2)

    async def subscriber(self, http: Any, n: int) -> None:
        import aiohttp

        last_id: str | None = None
        seen: set[str] = set()
        while not self.stop.is_set():
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with http.get(f"{self.url}/v1/events/stream",
                                    params={"project": PROJECTS[n % len(PROJECTS)]},
                                    headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=None,
                                                                  sock_read=10)) as resp:
                    async for raw in resp.content:
                        if self.stop.is_set():
                            return
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line.startswith("data: "):
                            event_id = json.loads(line[6:])["id"]
                            self.sse_duplicates += event_id in seen
                            seen.add(event_id)
                            self.sse_events += 1
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass
            await asyncio.sleep(0.2)

    async def resolve_unknown(self, http: Any) -> None:
        """Retry every unknown outcome with its event_id until it is answered."""
        for _ in range(60):
            pending = [e for e in self.unknown if self.appends[e][2] is None]
            if not pending:
                return
            for event_id in pending:
                project, content, _ = self.appends[event_id]
                status = await self._post(http, project, content, event_id)
                if status in (200, 201):
                    self.appends[event_id] = (project, content, status)
            await asyncio.sleep(0.5)


async def _faults(soak: Soak, valkey: EmbeddedValkey, serve: Serve, period: float) -> None:
    kinds = ["sigstop", "sigkill", "restart-serve"]
    k = 0
    while not soak.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(soak.stop.wait(), period)
        if soak.stop.is_set():
            return
        kind = kinds[k % len(kinds)]
        k += 1
        soak.faults[kind] += 1
        if kind == "sigstop" and valkey.pid is not None:
            os.kill(valkey.pid, signal.SIGSTOP)
            await asyncio.sleep(random.uniform(3, 6))
            os.kill(valkey.pid, signal.SIGCONT)
        elif kind == "sigkill":
            await asyncio.to_thread(valkey.kill)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(valkey.start)
        else:
            await asyncio.to_thread(serve.stop)
            await asyncio.to_thread(serve.start)
            serve.restarts += 1


async def _run(minutes: float, tmp: Path) -> tuple[Soak, dict[str, Any]]:
    import aiohttp

    valkey = EmbeddedValkey(tmp / "valkey").start()
    port = _free_port()
    serve = Serve(tmp / "data", valkey.url, port, tmp / "serve.log")
    serve.start()
    soak = Soak(f"http://127.0.0.1:{port}")
    period = max(5.0, minutes * 60 / 24)  # ~24 faults per run
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = [
                *(asyncio.create_task(soak.appender(http, n)) for n in range(APPENDERS)),
                *(asyncio.create_task(soak.replayer(http, n)) for n in range(REPLAYERS)),
                *(asyncio.create_task(soak.subscriber(http, n)) for n in range(SUBSCRIBERS)),
                asyncio.create_task(_faults(soak, valkey, serve, period)),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(soak.stop.wait(), minutes * 60)
            soak.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            before_retry = await _log(valkey.url)
            await soak.resolve_unknown(http)
        logged = await _log(valkey.url)
    finally:
        serve.stop()
        valkey.stop()
    in_log_before = {e for e, _ in before_retry}
    ids = Counter(e for e, _ in logged)
    contents = Counter(c for _, c in logged)
    acknowledged = [e for e, (_, _, s) in soak.appends.items() if s in (200, 201)
                    and e not in soak.unknown]
    figures = {
        "acknowledged": len(acknowledged),
        "lost": sum(1 for e in acknowledged if e not in ids),
        "duplicated": sum(1 for n in ids.values() if n > 1)
        + sum(1 for n in contents.values() if n > 1),
        "refused (503)": len(soak.refused),
        "refused but written": sum(1 for e in soak.refused if e in ids),
        "unknown outcome (504 / no answer)": len(soak.unknown),
        "unknown, in the log before retry": sum(1 for e in soak.unknown if e in in_log_before),
        "unknown, unresolved after retries": sum(1 for e in soak.unknown
                                                 if soak.appends[e][2] is None),
        "unknown, in the log after retry (once)": sum(1 for e in soak.unknown if ids[e] == 1),
        "sse events (duplicates)": f"{soak.sse_events} ({soak.sse_duplicates})",
        "replay pages": soak.replay_pages,
        "faults": dict(soak.faults),
        "statuses": dict(soak.statuses),
    }
    return soak, figures


async def _log(url: str) -> list[tuple[str, str]]:
    store = await EventStore.open(url)
    try:
        out = []
        cursor = "0-0"
        while True:
            batch = await store.read(0, cursor, 10_000)
            if not batch:
                return out
            out += [(str(e.id), str(e.data.get("content"))) for e in batch
                    if e.type == "message.appended"]
            cursor = batch[-1].position
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--quick", action="store_true", help="one minute")
    args = parser.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    with scratch_dir("soak") as tmp:
        soak, figures = asyncio.run(_run(minutes, tmp))
    print(f"\nsoak: {minutes:g} min, faults every ~{max(5.0, minutes * 60 / 24):.0f} s")
    for name, value in figures.items():
        print(f"  {name:42} {value}")
    p = percentiles(soak.latencies, (50, 99)) if soak.latencies else {"p50": 0, "p99": 0}
    results = [
        metric("acknowledged appends", [figures["acknowledged"]], "appends"),
        metric("lost", [figures["lost"]], "appends", higher_is_better=False,
               goal="0", goal_met=figures["lost"] == 0),
        metric("duplicated", [figures["duplicated"]], "events", higher_is_better=False,
               goal="0", goal_met=figures["duplicated"] == 0),
        metric("refused (503) but written", [figures["refused but written"]], "appends",
               higher_is_better=False, goal="0", goal_met=figures["refused but written"] == 0),
        metric("unknown outcome (504 / no answer)",
               [figures["unknown outcome (504 / no answer)"]], "appends",
               higher_is_better=False),
        metric("p50 well-behaved requests", [p["p50"] * 1000], "ms", higher_is_better=False),
        metric("p99 well-behaved requests", [p["p99"] * 1000], "ms", higher_is_better=False),
    ]
    print_table("soak under faults", results)
    emit("soak", results, argparse.Namespace(quick=args.quick, reps=1), minutes=minutes,
         figures={k: v for k, v in figures.items()})


if __name__ == "__main__":
    main()
