"""fsync-type system calls per operation: the SQLite peers (in this process) vs chatlog's Valkey.

Counts, with ``strace -c -w`` attached for the measured operations only, the
``fsync``/``fdatasync`` calls (and writes) of:

- ``peer-es``: eventsourcing's SQLite module, ``Application.save`` of 1 event;
- ``chatlog-es``: the same save on chatlog (strace on the Valkey server);
- ``peer-lg``: ``AsyncSqliteSaver``, ``aget_tuple`` + ``aput`` pairs;
- ``chatlog-lg``: ``ChatlogSaver``, the same pairs (strace on the Valkey server).

Needs ``strace`` and permission to attach to one's own processes. A probe for
the report, not a benchmark: strace slows what it watches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import scratch_dir, valkey_server
from bench_integrations import Bank, _checkpoint, _es_steps

TRACE = "trace=fsync,fdatasync,write,pwrite64,writev"


def _attach(pid: int, out: Path) -> subprocess.Popen[bytes]:
    tracer = subprocess.Popen(["strace", "-f", "-c", "-w", "-e", TRACE, "-p", str(pid),
                               "-o", str(out)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # (attached by then)
    return tracer


def _detach(tracer: subprocess.Popen[bytes], out: Path, what: str, n: int, wall: float) -> None:
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    print(f"{what}: {wall / n * 1e6:.0f} us/op wall (traced), per op:")
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "write", "pwrite64",
                                              "writev"):
            calls = int(parts[3])
            print(f"  {parts[-1]:<10} {calls / n:5.2f} calls, {float(parts[1]) / n * 1e6:6.0f} us")


async def _pairs(saver: Any, n: int) -> float:
    configs: list[Any] = [{"configurable": {"thread_id": f"t-{i}", "checkpoint_ns": ""}}
                          for i in range(n)]
    start = time.perf_counter()
    for i in range(n):
        await saver.aget_tuple(configs[i])
        configs[i] = await saver.aput(configs[i], _checkpoint(i % 20), {"step": 1}, {})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["peer-es", "chatlog-es", "peer-lg", "chatlog-lg"])
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    n = args.n
    with scratch_dir("fsyncs") as data:
        out = data / "strace.txt"
        if args.mode == "peer-es":
            app = Bank(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                            "SQLITE_DBNAME": str(data / "peer.sqlite")})
            step = _es_steps(app)["save1"]
            step()
            tracer = _attach(os.getpid(), out)
            start = time.perf_counter()
            for _ in range(n):
                step()
            _detach(tracer, out, "eventsourcing.sqlite save of 1", n, time.perf_counter() - start)
            app.close()
            return
        if args.mode == "peer-lg":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async def peer() -> None:
                async with AsyncSqliteSaver.from_conn_string(str(data / "lg.sqlite")) as q:
                    await q.setup()
                    tracer = _attach(os.getpid(), out)
                    wall = await _pairs(q, n)
                    _detach(tracer, out, "AsyncSqliteSaver aget_tuple + aput", n, wall)

            asyncio.run(peer())
            return
        with valkey_server() as server:
            assert server.pid is not None
            if args.mode == "chatlog-es":
                app = Bank(env={"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
                                "CHATLOG_REDIS_URL": server.url, "CHATLOG_KEY_PREFIX": "f"})
                step = _es_steps(app)["save1"]
                step()
                tracer = _attach(server.pid, out)
                start = time.perf_counter()
                for _ in range(n):
                    step()
                _detach(tracer, out, "chatlog save of 1 (valkey's calls)", n,
                        time.perf_counter() - start)
                app.close()
                return
            from chatlog.integrations.langgraph import ChatlogSaver

            async def mine() -> None:
                async with ChatlogSaver.from_conn_string(server.url, project="f",
                                                         key_prefix="f") as s:
                    await s.aget_tuple({"configurable": {"thread_id": "warm"}})
                    tracer = _attach(server.pid or 0, out)
                    wall = await _pairs(s, n)
                    _detach(tracer, out, "ChatlogSaver aget_tuple + aput (valkey's calls)", n,
                            wall)

            asyncio.run(mine())


if __name__ == "__main__":
    main()
