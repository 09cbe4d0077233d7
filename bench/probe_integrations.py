"""Where an integration operation's time goes: round trips, commands, server and client CPU.

For each operation bench_integrations.py measures (a LangGraph ``aget_tuple``
and ``aput``, eventsourcing ``Application.save`` of 1 and of 100 events and a
read of 100 notifications), on a fresh embedded-default Valkey (appendfsync
always):

- round trips per operation: writes to the server's socket (redis-py's
  ``send_packed_command``, the lean connection's transport writes), counted by
  wrapping them in this process only (a probe, not a test);
- commands per operation and the server's microseconds in them (``INFO
  commandstats`` before and after), with the commands by name;
- this process's CPU per operation (``time.process_time``);
- the peers' SQLite durability settings as they run (``PRAGMA synchronous``,
  ``journal_mode``), beside Valkey's ``appendfsync``;
- what one synced write costs on the scratch filesystem, appended (as Valkey
  appends every write to its append-only file) and overwriting a file's
  existing blocks (as SQLite reuses its WAL from the start after a checkpoint),
  interleaved: the first changes the file's size, so each ``fdatasync`` also
  waits for a journal commit (ext4), the second does not;
- with ``--profile``, the top of a cProfile of each operation's client side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from redis.connection import AbstractConnection

from _common import scratch_dir, valkey_server
from bench_integrations import Bank, _checkpoint, _es_durability, _es_steps
from chatlog.eventstore import lean
from chatlog.integrations import _eventsourcing_datastore

try:  # (absent before the raw connections: the probe also runs on older trees)
    from chatlog.integrations import _wire
except ImportError:
    _wire = None  # type: ignore[assignment]
from chatlog.integrations.langgraph import ChatlogSaver

WRITES = {"n": 0}


def _counting(cls: Any, name: str) -> None:
    original = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        WRITES["n"] += 1
        return original(self, *args, **kwargs)

    setattr(cls, name, wrapper)


_counting(AbstractConnection, "send_packed_command")
if _wire is not None:
    _counting(_wire.WireConnection, "send_packed_command")


class _CountingTransport:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, data: bytes) -> None:
        WRITES["n"] += 1
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_made = lean._Protocol.connection_made


def _connection_made(self: Any, transport: Any) -> None:
    _made(self, transport)
    self.transport = _CountingTransport(self.transport)


lean._Protocol.connection_made = _connection_made  # type: ignore[method-assign]


def _stats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    out = {}
    for name, row in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(row["calls"]), int(row["usec"]))
    return out


@contextmanager
def measured(r: redis.Redis, what: str, n: int, out: list[str]) -> Iterator[None]:
    before, writes = _stats(r), WRITES["n"]
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    writes = WRITES["n"] - writes
    after = _stats(r)
    calls = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after}
    usec = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
    by_name = ", ".join(f"{k} {v / n:g}" for k, v in sorted(calls.items()) if v and k != "info")
    out.append(f"{what:<22} round trips/op {writes / n:5.2f}  commands/op "
               f"{sum(v for k, v in calls.items() if k != 'info') / n:6.2f}  server us/op "
               f"{usec / n:7.1f}  client cpu us/op {cpu / n * 1e6:7.1f}  wall us/op "
               f"{wall / n * 1e6:7.1f}  [{by_name}]")


def _profile(what: str, step: Callable[[], Any], n: int, top: int) -> str:
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return f"--- {what}: cProfile tottime (CPU), {n} operations\n" + buf.getvalue()


async def _langgraph(url: str, r: redis.Redis, n: int, out: list[str],
                     profile: int) -> list[str]:
    profiles = []
    async with ChatlogSaver.from_conn_string(url, project="probe", key_prefix="probe") as s:
        configs: list[Any] = []
        for i in range(n):  # a fresh thread each, at step 10
            config: Any = {"configurable": {"thread_id": f"t-{i}", "checkpoint_ns": ""}}
            configs.append(await s.aput(config, _checkpoint(9), {"step": 9}, {}))
        with measured(r, "LangGraph aget_tuple", n, out):
            for config in configs:
                await s.aget_tuple(config)
        with measured(r, "LangGraph aput", n, out):
            for i, config in enumerate(configs):
                configs[i] = await s.aput(config, _checkpoint(10), {"step": 10}, {})
        with measured(r, "LangGraph aput_writes", n, out):
            for config in configs:
                await s.aput_writes(config, [("messages", "hi"), ("step", 3)], "task-1")
        if profile:
            cps = [_checkpoint(10 + k) for k in range(profile)]
            prof = cProfile.Profile(time.process_time)
            prof.enable()
            for k in range(profile):
                await s.aget_tuple(configs[k % n])
                configs[k % n] = await s.aput(configs[k % n], cps[k], {"step": k}, {})
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            profiles.append(f"--- LangGraph aget_tuple + aput: cProfile tottime (CPU), {profile} "
                            f"pairs\n{buf.getvalue()}")
    return profiles


def _ping(r: redis.Redis, n: int = 2000) -> str:
    """What one round trip costs here with (almost) no work on either side: a PING."""
    conn = r.connection_pool.get_connection()
    try:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            conn.send_command("PING")
            conn.read_response()
            times.append(time.perf_counter() - start)
    finally:
        r.connection_pool.release(conn)
    times.sort()
    return (f"a bare round trip (PING): median {times[n // 2] * 1e6:.0f} us, p90 "
            f"{times[n * 9 // 10] * 1e6:.0f} us, mean {sum(times) / n * 1e6:.0f} us")


def _fsync_costs(data: Path, n: int = 300, size: int = 4096) -> str:
    """Median microseconds of ``write(size)`` + ``fdatasync``: appended to a growing
    file, and overwriting a file's existing blocks, one of each in turn."""
    block = b"x" * size
    grow = os.open(data / "append.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    reuse = os.open(data / "reuse.bin", os.O_WRONLY | os.O_CREAT)
    times: dict[int, list[float]] = {grow: [], reuse: []}
    try:
        os.write(reuse, b"\0" * size * n)
        os.fsync(reuse)
        os.lseek(reuse, 0, os.SEEK_SET)
        for _ in range(n):
            for fd in (grow, reuse):
                start = time.perf_counter()
                os.write(fd, block)
                os.fdatasync(fd)
                times[fd].append(time.perf_counter() - start)
    finally:
        os.close(grow)
        os.close(reuse)
    med = {fd: sorted(t)[n // 2] * 1e6 for fd, t in times.items()}
    return (f"write {size} B + fdatasync, median of {n} each, interleaved: appended "
            f"(Valkey's AOF) {med[grow]:.0f} us, overwriting existing blocks (SQLite's "
            f"reused WAL) {med[reuse]:.0f} us")


def _pragmas(data: Path) -> list[str]:
    out = [_es_durability({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                           "SQLITE_DBNAME": str(data / "peer.sqlite")})]

    async def saver() -> None:
        async with AsyncSqliteSaver.from_conn_string(str(data / "lg.sqlite")) as q:
            await q.setup()
            async with q.conn.execute("PRAGMA synchronous") as cur:
                sync = (await cur.fetchone() or [None])[0]
            async with q.conn.execute("PRAGMA journal_mode") as cur:
                journal = (await cur.fetchone() or [None])[0]
            out.append(f"AsyncSqliteSaver: synchronous={sync} (2 = FULL) journal_mode={journal}")

    asyncio.run(saver())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="operations per measurement")
    parser.add_argument("--profile", type=int, default=0,
                        help="also profile this many of each operation's client side")
    parser.add_argument("--script-batches", action="store_true",
                        help="write every eventsourcing batch with the insert script "
                             "(not MULTI/EXEC from 10 events on), to compare the two")
    args = parser.parse_args()
    if args.script_batches:
        _eventsourcing_datastore.MULTI_MIN = 10**9  # type: ignore[attr-defined]
    out: list[str] = []
    profiles: list[str] = []
    with valkey_server() as server, scratch_dir("probe") as data, \
            redis.Redis.from_url(server.url) as r:
        out.append(f"valkey appendfsync={r.config_get('appendfsync')['appendfsync']} "
                   f"appendonly={r.config_get('appendonly')['appendonly']}")
        out += _pragmas(data)
        out.append(_fsync_costs(data))
        out.append(_ping(r))
        profiles += asyncio.run(_langgraph(server.url, r, args.n, out, args.profile))
        app = Bank(env={"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
                        "CHATLOG_REDIS_URL": server.url, "CHATLOG_KEY_PREFIX": "probe"})
        try:
            steps = _es_steps(app)
            for what in ("save1", "save100", "read100"):
                steps[what]()  # warm (the first batch has no memo)
                with measured(r, f"eventsourcing {what}", args.n, out):
                    for _ in range(args.n):
                        steps[what]()
                if args.profile:
                    profiles.append(_profile(f"eventsourcing {what}", steps[what],
                                             args.profile, 25))
        finally:
            app.close()
    print("\n".join(out))
    for p in profiles:
        print(p)


if __name__ == "__main__":
    main()
