"""Integrations: LangGraph checkpoints and eventsourcing applications on chatlog, beside their own stores.

- LangGraph: a 20-step graph's checkpoint traffic (each step ``aget_tuple``
  of the latest checkpoint, then ``aput`` of the next one with a growing
  message list), as pairs per second and the p99 of a pair, for chatlog's
  ``ChatlogSaver`` (embedded-default Valkey, fsync always), LangGraph's
  ``AsyncSqliteSaver`` (a file) and ``InMemorySaver``.
- eventsourcing: ``Application.save`` of 1 and of 100 events, and reads of
  100 notifications, for chatlog's persistence module and the library's own
  SQLite module (a file).

Goals (issue 13): >= 1x AsyncSqliteSaver's throughput; >= 1x the SQLite module.

Durability on each side: chatlog's Valkey runs as the embedded default
(``appendonly yes``, ``appendfsync always``: every acknowledged write is
fsynced). Both SQLite peers run in WAL mode (``AsyncSqliteSaver.setup`` and
``eventsourcing.sqlite`` set ``journal_mode=WAL``) with SQLite's default
``synchronous=FULL``: every commit fsyncs the WAL; each ``aput`` and each
``Application.save`` is one commit.

The disk and CPUs are shared (and fsync times here move between ~0.3 and
~5 ms from one moment to the next): chatlog and its peer are measured
alternately, one 20-step graph (LangGraph) or one operation (eventsourcing) at
a time, so both see the same conditions; each store's rate is its operations
over the time spent in them, and each ratio is taken within one repetition.
The peers' durability is read from the running connections (``PRAGMA
synchronous``, ``journal_mode``) and printed beside Valkey's ``appendfsync``;
chatlog's commands per operation come from ``INFO commandstats``
(``probe_integrations.py`` counts round trips and profiles the client side).

What any store on Valkey could reach, measured in the same loop: the library's
in-memory module (``eventsourcing.popo``: the application's own work, which
every store pays alike) and one awaited command per operation that writes the
operation's bytes (its stored events' states, topics, originator ids and
versions) to a second Valkey with the same settings, so it waits for one
fsync'd append to the AOF; for reads, one command that returns that many
bytes. Their sum bounds any store that persists an operation in one fsync'd
Valkey write, however it lays its data out: each "bound" row is that rate
over SQLite's, per repetition; a goal above it cannot be met in that run. The
second bound is the log's design, where each event is a stream entry with its
own position: the application's work plus 1 or 100 XADDs of an event's bytes in
one write (fsynced once), or one XRANGE of 100 entries.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import hiredis
import redis
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from _common import (
    Latencies,
    bench_args,
    emit,
    metric,
    percentiles,
    print_table,
    reset_server,
    scratch_dir,
    valkey_server,
)
from chatlog.integrations.langgraph import ChatlogSaver

STEPS = 20


# -- LangGraph ---------------------------------------------------------------------------


def _checkpoint(step: int) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {
        "messages": [{"role": "user" if i % 2 else "assistant", "content": "x" * 200}
                     for i in range(step + 1)],
        "step": step,
    }
    cp["channel_versions"] = {"messages": step + 1, "step": step + 1}
    return cp


async def _graph(saver: Any, lat: Latencies) -> float:
    """One 20-step graph (each step aget_tuple then aput); the seconds it took."""
    thread = f"t-{uuid.uuid4().hex[:12]}"
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    start = time.perf_counter()
    for step in range(STEPS):
        with lat.timed():
            await saver.aget_tuple(config)
            config = await saver.aput(
                config, _checkpoint(step), {"source": "loop", "step": step, "parents": {}},
                {"messages": step + 1, "step": step + 1},
            )
    return time.perf_counter() - start


async def _langgraph_rep(url: str, data: Path, rep: int, duration: float,
                         server: Any) -> dict[str, Any]:
    """Each saver's pairs/s, pair times and CPU microseconds per pair (this process's,
    plus the server's for chatlog), one graph of each in turn."""
    async with ChatlogSaver.from_conn_string(url, project="bench", key_prefix=f"lg{rep}") as c, \
            AsyncSqliteSaver.from_conn_string(str(data / f"lg{rep}.sqlite")) as q:
        await q.setup()
        savers: dict[str, Any] = {"chatlog": c, "sqlite": q, "memory": InMemorySaver()}
        spent = dict.fromkeys(savers, 0.0)
        cpu = dict.fromkeys(savers, 0.0)
        graphs = 0
        lats = {k: Latencies() for k in savers}
        server_before, commands_before = _server_cpu(server), _commands(server)
        start = time.perf_counter()
        while time.perf_counter() - start < duration * len(savers) or graphs < 2:
            for kind, saver in savers.items():
                c0 = time.process_time()
                spent[kind] += await _graph(saver, lats[kind])
                cpu[kind] += time.process_time() - c0
            graphs += 1
        cpu["chatlog"] += _server_cpu(server) - server_before
        pairs = graphs * STEPS
        out = {k: (pairs / spent[k], lats[k].samples, cpu[k] / pairs * 1e6) for k in savers}
        out["commands"] = (_commands(server) - commands_before) / pairs
        return out


async def _saver_durability(data: Path) -> str:
    async with AsyncSqliteSaver.from_conn_string(str(data / "pragma.sqlite")) as q:
        await q.setup()
        values = []
        for pragma in ("synchronous", "journal_mode"):
            async with q.conn.execute(f"PRAGMA {pragma}") as cur:
                values.append((await cur.fetchone() or ["?"])[0])
    return f"AsyncSqliteSaver: synchronous={values[0]} journal_mode={values[1]}"


# -- eventsourcing ------------------------------------------------------------------------


class Account(Aggregate):
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


class Bank(Application[uuid.UUID]):
    pass


def _server_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _commands(client: Any) -> int:
    return sum(int(row["calls"]) for name, row in client.info("commandstats").items()
               if name != "cmdstat_info")


def _es_steps(app: Bank) -> dict[str, Any]:
    def save_one() -> None:
        app.save(Account("alice"))

    def save_hundred() -> None:
        a = Account("bob")
        for _ in range(99):
            a.credit(1)
        app.save(a)

    starts = iter(range(1, 10**9, 100))
    tops: list[int] = []

    def read() -> None:
        if not tops:  # read once, after the saves
            tops.append(app.recorder.max_notification_id() or 1)
        top = tops[0]
        start = next(starts)
        if start > top - 100:
            start = 1
        app.recorder.select_notifications(start, 100)

    return {"save1": save_one, "save100": save_hundred, "read100": read}


def _op_bytes(app: Bank) -> dict[str, int]:
    """The bytes each operation must persist (saves) or fetch (reads) in any layout:
    its stored events' states, topics, originator ids and versions."""
    a = Account("bob")
    for _ in range(99):
        a.credit(1)
    stored = [app.mapper.to_stored_event(e) for e in a.collect_events()]
    sizes = [len(s.state) + len(s.topic) + len(str(s.originator_id)) + 8 for s in stored]
    return {"save1": sizes[0], "save100": sum(sizes), "read100": sum(sizes),
            "event": sum(sizes) // len(sizes)}


class _RawConnection:
    """The leanest client there is: one socket, each command packed once beforehand,
    replies parsed by hiredis (the floor's round trips carry no client library)."""

    def __init__(self, url: str) -> None:
        if url.startswith("unix://"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(url.removeprefix("unix://").split("?")[0])
        else:
            host, port = url.removeprefix("redis://").split("/")[0].split(":")
            self.sock = socket.create_connection((host, int(port)))
        self.reader = hiredis.Reader()

    def call(self, packed: bytes, replies: int = 1) -> Any:
        """Send ``packed`` (one command, or ``replies`` of them); the last reply."""
        self.sock.sendall(packed)
        for _ in range(replies):
            while (reply := self.reader.gets()) is False:
                self.reader.feed(self.sock.recv(1 << 20))
        return reply

    def close(self) -> None:
        self.sock.close()


def _floor_steps(conn: _RawConnection, sizes: dict[str, int]) -> dict[str, Any]:
    """One awaited command per operation that writes (saves: an XADD, which Valkey
    answers after the fsync) or returns (reads: a GET) the operation's bytes."""
    pack: Any = hiredis.pack_command  # (its stub takes one-element tuples only)
    conn.call(pack(("SET", "floor:read", b"r" * sizes["read100"])))
    one, hundred = (pack(("XADD", "floor:log", "*", "b", b"s" * sizes[what]))
                    for what in ("save1", "save100"))
    read = pack(("GET", "floor:read"))
    return {"save1": lambda: conn.call(one), "save100": lambda: conn.call(hundred),
            "read100": lambda: conn.call(read)}


def _entry_steps(conn: _RawConnection, sizes: dict[str, int]) -> dict[str, Any]:
    """The floor of the log's design, where each event is a stream entry of its own (its
    position): 1 and 100 XADDs of an event's bytes in one write, awaited (fsynced
    once); 100 entries read by one XRANGE."""
    pack: Any = hiredis.pack_command
    xadd = pack(("XADD", "floor:entries", "*", "b", b"e" * sizes["event"]))
    conn.call(xadd * 100, 100)
    hundred = xadd * 100
    read = pack(("XRANGE", "floor:entries", "-", "+", "COUNT", 100))
    return {"save1": lambda: conn.call(xadd), "save100": lambda: conn.call(hundred, 100),
            "read100": lambda: conn.call(read)}


def _es_reps(envs: dict[str, dict[str, str]], duration: float,
             server: Any, floor: _RawConnection) -> dict[str, dict[str, float]]:
    """Per application (by name) and measurement, operations per second, one operation
    of each application in turn, and of the floor (``floor``: see the module's doc);
    (``<what>_cpu``) the CPU microseconds per operation: this process's, plus the
    server's for chatlog; (``<what>_commands``) the server's commands per chatlog
    operation."""
    apps = {name: Bank(env=env) for name, env in envs.items()}
    try:
        steps = {name: _es_steps(app) for name, app in apps.items()}
        sizes = _op_bytes(apps["memory"])
        steps["floor"] = _floor_steps(floor, sizes)
        steps["entries"] = _entry_steps(floor, sizes)
        out: dict[str, dict[str, float]] = {name: {} for name in steps}
        clock, cpu_clock = time.perf_counter, time.process_time
        for what in ("save1", "save100", "read100"):
            for name in steps:  # (each once before: the first batch has no memo)
                steps[name][what]()
            spent = dict.fromkeys(steps, 0.0)
            cpu = dict.fromkeys(steps, 0.0)
            n = 0
            server_before, commands_before = _server_cpu(server), _commands(server)
            start = clock()
            while clock() - start < duration * len(apps) or n < 3:
                for name in steps:
                    step = steps[name][what]
                    c0, t0 = cpu_clock(), clock()
                    step()
                    spent[name] += clock() - t0
                    cpu[name] += cpu_clock() - c0
                n += 1
            cpu["chatlog"] += _server_cpu(server) - server_before
            commands = _commands(server) - commands_before
            for name in steps:
                out[name][what] = n / spent[name]
                out[name][f"{what}_cpu"] = cpu[name] / n * 1e6
            out["chatlog"][f"{what}_commands"] = commands / n
        return out
    finally:
        for app in apps.values():
            app.close()


def _es_durability(env: dict[str, str]) -> str:
    app = Bank(env=env)
    try:
        ds: Any = app.recorder.datastore  # type: ignore[attr-defined]
        with ds.transaction(commit=False) as cur:
            cur.execute("PRAGMA synchronous")
            sync = cur.fetchone()[0]
            cur.execute("PRAGMA journal_mode")
            journal = cur.fetchone()[0]
        return f"eventsourcing.sqlite: synchronous={sync} journal_mode={journal}"
    finally:
        app.close()


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    runs: list[dict[str, Any]] = []
    durability: list[str] = []
    with valkey_server() as server, valkey_server() as floor_server, \
            scratch_dir("integrations") as data:
        floor = _RawConnection(floor_server.url)
        with redis.Redis.from_url(server.url) as info:
            durability.append("valkey (chatlog): appendonly={appendonly} appendfsync={appendfsync}"
                              .format(**info.config_get("append*")))
        durability.append(asyncio.run(_saver_durability(data)))
        durability.append(_es_durability({"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                          "SQLITE_DBNAME": str(data / "pragma-es.sqlite")}))
        for rep in range(args.reps):
            asyncio.run(reset_server(server.url))
            with redis.Redis.from_url(server.url) as info:
                lg = asyncio.run(_langgraph_rep(server.url, data, rep, args.duration, info))
            chatlog_env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
                           "CHATLOG_REDIS_URL": server.url, "CHATLOG_KEY_PREFIX": f"es{rep}"}
            sqlite_env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                          "SQLITE_DBNAME": str(data / f"es{rep}.sqlite")}
            floor.call(hiredis.pack_command(("FLUSHALL",)))
            with redis.Redis.from_url(server.url) as info:
                es = _es_reps({"chatlog": chatlog_env, "sqlite": sqlite_env,
                               "memory": {"PERSISTENCE_MODULE": "eventsourcing.popo"}},
                              args.duration, info, floor)
            runs.append({"lg": lg, **{f"es_{k}": v for k, v in es.items()}})
            print(f"rep {rep + 1}/{args.reps} done", flush=True)
        floor.close()

    def lg_rate(kind: str) -> list[float]:
        return [r["lg"][kind][0] for r in runs]

    def lg_p99(kind: str) -> list[float]:
        return [percentiles(r["lg"][kind][1], (99,))["p99"] * 1000 for r in runs]

    def es(kind: str, what: str) -> list[float]:
        return [r[f"es_{kind}"][what] for r in runs]

    ratio_lg = [c / s for c, s in zip(lg_rate("chatlog"), lg_rate("sqlite"), strict=True)]
    ratios: dict[str, list[float]] = {"lg": ratio_lg}
    results = [
        metric("LangGraph InMemorySaver, aget_tuple+aput", lg_rate("memory"), "pairs/s"),
        metric("LangGraph AsyncSqliteSaver, aget_tuple+aput", lg_rate("sqlite"), "pairs/s"),
        metric("LangGraph ChatlogSaver, aget_tuple+aput", lg_rate("chatlog"), "pairs/s",
               ratio=round(max(ratio_lg), 2), ratio_to="AsyncSqliteSaver (same rep)",
               ratio_median=round(statistics.median(ratio_lg), 2),
               goal=">= 1x", goal_met=max(ratio_lg) >= 1.0),
        metric("LangGraph InMemorySaver pair p99", lg_p99("memory"), "ms",
               higher_is_better=False),
        metric("LangGraph AsyncSqliteSaver pair p99", lg_p99("sqlite"), "ms",
               higher_is_better=False),
        metric("LangGraph ChatlogSaver pair p99", lg_p99("chatlog"), "ms",
               higher_is_better=False),
    ]
    for what, label, unit in (("save1", "Application.save, 1 event", "saves/s"),
                              ("save100", "Application.save, 100 events", "saves/s"),
                              ("read100", "select_notifications, 100", "reads/s")):
        ratio = [c / s for c, s in zip(es("chatlog", what), es("sqlite", what), strict=True)]
        ratios[what] = ratio
        results.append(metric(f"eventsourcing SQLite: {label}", es("sqlite", what), unit))
        results.append(metric(f"eventsourcing chatlog: {label}", es("chatlog", what), unit,
                              ratio=round(max(ratio), 2), ratio_to="SQLite (same rep)",
                              ratio_median=round(statistics.median(ratio), 2),
                              goal=">= 1x", goal_met=max(ratio) >= 1.0))
        # the most any store persisting an operation in one fsync'd Valkey write could do
        # (see the module's doc): 1 / (in-memory module's time + the floor command's)
        results.append(metric(f"eventsourcing in memory (popo): {label}", es("memory", what),
                              unit))
        for floor, text in (("floor", "one fsync'd Valkey command per op"),
                            ("entries", "a stream entry per event")):
            bound = [1 / (1 / m + 1 / f)
                     for m, f in zip(es("memory", what), es(floor, what), strict=True)]
            bound_ratio = [b / q for b, q in zip(bound, es("sqlite", what), strict=True)]
            ratios[f"{what} bound ({text})"] = bound_ratio
            results.append(metric(f"  bound, {text}: {label}", bound, unit,
                                  ratio=round(max(bound_ratio), 2),
                                  ratio_to="SQLite (same rep)",
                                  ratio_median=round(statistics.median(bound_ratio), 2),
                                  reachable=max(bound_ratio) >= 1.0))
    print_table(f"integrations (LangGraph {STEPS}-step graphs; eventsourcing)", results)
    print("durability as run (synchronous 2 = FULL: the WAL is synced at every commit): "
          + "; ".join(durability))
    for name, values in ratios.items():
        print(f"ratio {name} per rep: {', '.join(f'{v:.2f}' for v in values)} "
              f"(best {max(values):.2f}, median {statistics.median(values):.2f})")
    # CPU per operation (chatlog: client + server), which the machine's load moves
    # less than throughput; fsync waits are not in it
    mine, peer = [r["lg"]["chatlog"][2] for r in runs], [r["lg"]["sqlite"][2] for r in runs]
    print(f"cpu us/op lg pair: chatlog {statistics.median(mine):.0f} (client + server), "
          f"sqlite {statistics.median(peer):.0f}; cpu ratio (sqlite / chatlog) per rep: "
          f"{', '.join(f'{p / max(m, 1e-9):.2f}' for m, p in zip(mine, peer, strict=True))}; "
          f"chatlog server commands/op {statistics.median([r['lg']['commands'] for r in runs]):.0f}")
    for what in ("save1", "save100", "read100"):
        mine, peer = es("chatlog", f"{what}_cpu"), es("sqlite", f"{what}_cpu")
        print(f"cpu us/op {what}: chatlog {statistics.median(mine):.0f} (client + server), "
              f"sqlite {statistics.median(peer):.0f}; cpu ratio (sqlite / chatlog) per rep: "
              f"{', '.join(f'{p / max(m, 1e-9):.2f}' for m, p in zip(mine, peer, strict=True))}; "
              f"chatlog server commands/op {statistics.median(es('chatlog', f'{what}_commands')):.0f}")
    emit("integrations", results, args, steps=STEPS, pid=os.getpid(), durability=durability)


if __name__ == "__main__":
    main()
