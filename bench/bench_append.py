"""Appends/s to the event log, beside raw XADD ceilings and the eventsourcing/SQLite peer.

All on one fresh Valkey with the embedded default's settings (appendonly yes,
appendfsync always, unix socket), in the same run:

- ceiling 1: raw redis-py XADD of the same entry, awaited one at a time;
- ceiling 2: raw redis-py XADD pipelined, 1,000 a batch;
- the lean ceiling: raw XADD over one lean connection (``hiredis`` packing and
  parsing, :mod:`chatlog.eventstore.lean`), 256 concurrent awaited XADDs
  written back to back;
- chatlog ``await store.append_one(ev)`` one at a time (goal: ≥ 0.5x ceiling 1);
- chatlog ``store.append([...100 events of one thread...])`` (goal: ≥ 0.5x ceiling 2);
- chatlog 256 concurrent ``append_one`` calls, group-committed (goals: ≥ 0.5x ceiling 2
  and ≥ 0.5x the lean ceiling);
- the peer: the ``eventsourcing`` library's SQLite module, one event per save and
  100 events per save;
- the bounds of the goals against the peer: raw XADD over one lean connection
  awaited one at a time, and 100 XADDs in one write, awaited (what an awaited
  append and a batch of 100 must at least do: each event is a stream entry, and
  Valkey answers after the fsync). An append path can be no faster than these,
  so "bound x peer" is the most the goals against the peer could read in that
  run; a goal above it cannot be met there.

The chatlog figures include building each event (``MessageAppended`` and
``NewEvent.of``), as a caller has to; the raw ceilings send a prebuilt entry.
Events go round-robin to 100 threads of one project.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from _common import (
    PROJECT,
    Rate,
    bench_args,
    emit,
    format_table,
    metric,
    print_table,
    reset_server,
    rss_mb,
    run_for,
    run_for_sync,
    sample_content,
    scratch_dir,
    server_info,
    thread_ids,
    valkey_server,
)
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.codec import encode_body
from chatlog.eventstore.lean import LeanConnection

T = TypeVar("T")
THREADS = thread_ids(100)
BATCH = 100  # events per chatlog / peer batch (one thread)
PIPELINE = 1000  # XADDs per raw pipeline
CONCURRENCY = 256  # append_one calls in flight
WARMUP = 0.1  # seconds of untimed warm-up before each measurement
ROUNDS = 3  # slices per mode and repetition, interleaved with the other modes

RAW_AWAITED = "raw XADD, awaited"
RAW_PIPELINED = f"raw XADD, pipelined x{PIPELINE}"
RAW_LEAN = f"raw XADD, lean connection, {CONCURRENCY} concurrent"
LEAN_AWAITED = "bound: raw XADD, lean connection, awaited"
LEAN_BATCH = f"bound: raw XADD, lean connection, {BATCH} per write, awaited"
SINGLE = "chatlog append_one, awaited"
BATCHED = f"chatlog append, batches of {BATCH}"
CONCURRENT = f"chatlog append_one, {CONCURRENCY} concurrent"
PEER_SINGLE = "peer eventsourcing+SQLite, 1/save"
PEER_BATCHED = f"peer eventsourcing+SQLite, {BATCH}/save"


@functools.lru_cache(maxsize=64)
def _content(k: int) -> str:
    return sample_content(200, seed=k)


def _metadata(i: int) -> dict[str, Any]:
    return {"model": "gpt-bench-1", "tokens": 48 + i % 50, "run_id": "run-0042"}


def chat_event(i: int) -> NewEvent:
    """Event number ``i``: a ~200-character message in thread ``i % 100``."""
    thread = THREADS[i % len(THREADS)]
    return NewEvent.of(
        MessageAppended(
            thread_id=thread,
            role="assistant" if i % 2 else "user",
            content=_content(i % 64),
            metadata=_metadata(i),
        ),
        project=PROJECT.key,
        project_name=PROJECT.display,
        aggregate_type="thread",
        aggregate_id=thread,
    )


def raw_fields() -> dict[str, bytes | str]:
    """The stream entry chatlog writes for one event (what the raw ceilings XADD)."""
    ev = chat_event(0)
    return {"i": str(ev.id), "t": ev.type, "a": ev.aggregate, "v": "1", "b": encode_body(ev)}


# -- the modes: each opened once per repetition, then measured in slices -----------


class Mode:
    """One way of appending: ``open`` (and warm up), ``run`` for some seconds, ``close``."""

    name = ""

    async def open(self, url: str, tmp: Path) -> None:
        await self.run(WARMUP)

    async def run(self, seconds: float) -> Rate:
        return await run_for(seconds, self.step)

    async def step(self) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class RawAwaited(Mode):
    name = RAW_AWAITED

    async def open(self, url: str, tmp: Path) -> None:
        self.r = aioredis.from_url(url)  # plain redis-py (with hiredis), default options
        self.fields = raw_fields()
        await super().open(url, tmp)

    async def step(self) -> int:
        await self.r.xadd("bench:raw", self.fields)  # type: ignore[arg-type]
        return 1

    async def close(self) -> None:
        await self.r.aclose()


class RawPipelined(RawAwaited):
    name = RAW_PIPELINED

    async def step(self) -> int:
        pipe = self.r.pipeline(transaction=False)
        for _ in range(PIPELINE):
            pipe.xadd("bench:raw", self.fields)  # type: ignore[arg-type]
        await pipe.execute()
        return PIPELINE


class RawLean(Mode):
    """The lean ceiling: concurrent awaited XADDs over one hiredis connection."""

    name = RAW_LEAN

    async def open(self, url: str, tmp: Path) -> None:
        self.conn = LeanConnection.from_url(url)
        self.args = [x for kv in raw_fields().items() for x in kv]
        await super().open(url, tmp)

    async def run(self, seconds: float) -> Rate:
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        counts = [0] * CONCURRENCY
        execute, args = self.conn.execute, self.args

        async def worker(w: int) -> None:
            while time.perf_counter() < deadline:
                await execute("XADD", "bench:lean", "*", *args)
                counts[w] += 1

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return Rate(sum(counts), time.perf_counter() - start, time.process_time() - cpu)

    async def close(self) -> None:
        await self.conn.close()


class LeanAwaited(RawLean):
    """The bound of an awaited append: one raw XADD at a time, over a lean connection."""

    name = LEAN_AWAITED

    async def run(self, seconds: float) -> Rate:
        return await run_for(seconds, self.step)

    async def step(self) -> int:
        await self.conn.execute("XADD", "bench:lean", "*", *self.args)
        return 1


class LeanBatch(LeanAwaited):
    """The bound of a batch: 100 raw XADDs in one write, awaited together."""

    name = LEAN_BATCH

    async def step(self) -> int:
        await self.conn.execute_many([("XADD", "bench:lean", "*", *self.args)] * BATCH)
        return BATCH


class ChatlogSingle(Mode):
    name = SINGLE

    async def open(self, url: str, tmp: Path) -> None:
        self.store = await EventStore.open(url)
        self.i = 0
        await super().open(url, tmp)

    async def step(self) -> int:
        self.i += 1
        await self.store.append_one(chat_event(self.i))
        return 1

    async def close(self) -> None:
        await self.store.close()


class ChatlogBatched(ChatlogSingle):
    name = BATCHED

    async def step(self) -> int:
        self.i += 1
        # 100 events of one thread: i ≡ n (mod 100) picks thread n % 100.
        await self.store.append([chat_event(self.i + k * len(THREADS)) for k in range(BATCH)])
        return BATCH


class ChatlogConcurrent(ChatlogSingle):
    name = CONCURRENT

    async def run(self, seconds: float) -> Rate:
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        counts = [0] * CONCURRENCY

        async def worker(w: int) -> None:
            while time.perf_counter() < deadline:
                self.i += 1
                await self.store.append_one(chat_event(self.i))
                counts[w] += 1

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return Rate(sum(counts), time.perf_counter() - start, time.process_time() - cpu)


@functools.cache
def _peer_classes() -> tuple[type[Any], type[Any]]:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Thread(Aggregate):  # type: ignore[misc]
        @event("Started")  # type: ignore[untyped-decorator]
        def __init__(self, project_name: str, thread_id: str) -> None:
            self.project_name = project_name
            self.thread_id = thread_id
            self.messages = 0

        @event("MessageAppended")  # type: ignore[untyped-decorator]
        def append_message(self, role: str, content: str, metadata: dict[str, Any]) -> None:
            self.messages += 1

    return Application, Thread


class Peer(Mode):
    """The same workload through eventsourcing's SQLite module (WAL, synchronous=FULL):
    one Thread aggregate per thread, ``per_save`` message events per ``app.save``."""

    def __init__(self, per_save: int) -> None:
        self.per_save = per_save
        self.name = PEER_SINGLE if per_save == 1 else PEER_BATCHED

    async def open(self, url: str, tmp: Path) -> None:
        application, thread_cls = _peer_classes()
        self.db = tmp / f"peer-{self.per_save}.db"
        self.app = application(
            env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(self.db)}
        )
        self.threads = [thread_cls(PROJECT.display, t) for t in THREADS]
        self.app.save(*self.threads)
        self.i = 0
        await super().open(url, tmp)

    async def run(self, seconds: float) -> Rate:
        return run_for_sync(seconds, self.save)  # blocking, as the library is

    def save(self) -> int:
        self.i += 1
        agg = self.threads[self.i % len(self.threads)]
        for k in range(self.per_save):
            j = self.i + k * len(THREADS)
            agg.append_message(
                role="assistant" if j % 2 else "user", content=_content(j % 64),
                metadata=_metadata(j),
            )
        self.app.save(agg)
        return self.per_save

    async def close(self) -> None:
        self.app.close()
        for f in self.db.parent.glob(f"{self.db.name}*"):
            os.unlink(f)


def all_modes() -> list[Mode]:
    return [RawAwaited(), RawPipelined(), RawLean(), ChatlogSingle(), ChatlogBatched(),
            ChatlogConcurrent(), Peer(1), Peer(BATCH), LeanAwaited(), LeanBatch()]


async def repetition(url: str, tmp: Path, duration: float, rounds: int) -> dict[str, Rate]:
    """Every mode for ``duration`` seconds, in ``rounds`` interleaved slices.

    Each round empties the server, then runs each mode for ``duration / rounds``:
    a mode and its ceiling are measured seconds apart, so the machine's load
    (others' tests, fsyncs) hits both alike.
    """
    modes = all_modes()
    totals = {m.name: Rate(0, 0.0) for m in modes}
    info = aioredis.from_url(url)

    async def server_cpu() -> float:
        cpu = await info.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    try:
        await reset_server(url)
        for m in modes:
            await m.open(url, tmp)
        for _ in range(rounds):
            await reset_server(url)
            for m in modes:
                before = await server_cpu()
                rate = await m.run(duration / rounds)
                used = await server_cpu() - before if not isinstance(m, Peer) else 0.0
                t = totals[m.name]
                totals[m.name] = Rate(t.ops + rate.ops, t.seconds + rate.seconds,
                                      t.cpu_s + rate.cpu_s, t.server_cpu_s + used)
    finally:
        for m in modes:
            with contextlib.suppress(Exception):
                await m.close()
        await info.aclose()
    return totals


# -- the run --------------------------------------------------------------------


def main() -> int:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "append benchmark",
                      add=_loop_option)
    duration = args.duration
    rates: dict[str, list[Rate]] = {m.name: [] for m in all_modes()}
    with valkey_server() as server, scratch_dir("peer") as tmp:
        assert server.pid is not None
        print(f"Valkey pid {server.pid} at {server.url}; {args.reps} reps x {duration:g} s "
              f"per mode, in {ROUNDS} interleaved slices; modes: " + " | ".join(rates),
              flush=True)
        server_rss = 0.0
        for rep in range(args.reps):
            totals = _run(repetition(server.url, tmp, duration, ROUNDS), args.loop)
            server_rss = max(server_rss, rss_mb(server.pid))
            for name, rate in totals.items():
                rates[name].append(rate)
            print(f"rep {rep + 1} (events/s): " + " | ".join(
                f"{rate.per_s:,.0f}" for rate in totals.values()
            ), flush=True)
        info = asyncio.run(server_info(server.url))
        info["peak_rss_mb"] = server_rss

    runs = {name: [r.per_s for r in rs] for name, rs in rates.items()}
    cpu = {
        name: (
            round(statistics.median(r.cpu_us_per_op for r in rs), 1),
            round(statistics.median(r.server_cpu_us_per_op for r in rs), 1),
        )
        for name, rs in rates.items()
    }
    results = build_results(rates, runs)
    for row in results:
        mode = row["metric"].split(" (vs ")[0]
        if mode in cpu:
            row["client_cpu_us"], row["server_cpu_us"] = cpu[mode]
    print_table("Appends/s on the embedded default (appendfsync always, unix socket)", results)
    print("\nCPU per event, median of the reps (steadier than wall time on a busy machine;"
          " the peer's SQLite work is in the client column)")
    print(format_table(
        ["mode", "client us/event", "server us/event"],
        [[name, c, s or None] for name, (c, s) in cpu.items()],
    ))
    vs = [
        [SINGLE, PEER_SINGLE, _ratio(runs[SINGLE], runs[PEER_SINGLE])],
        [BATCHED, PEER_BATCHED, _ratio(runs[BATCHED], runs[PEER_BATCHED])],
        [CONCURRENT, PEER_BATCHED, _ratio(runs[CONCURRENT], runs[PEER_BATCHED])],
        [LEAN_AWAITED, PEER_SINGLE, _ratio(runs[LEAN_AWAITED], runs[PEER_SINGLE])],
        [LEAN_BATCH, PEER_BATCHED, _ratio(runs[LEAN_BATCH], runs[PEER_BATCHED])],
    ]
    print("\nchatlog beside the peer (median over reps of chatlog / peer in the same rep)")
    print(format_table(["chatlog", "peer", "x peer"], vs), flush=True)
    emit("append", results, args, server=info, bench_rss_mb=rss_mb(),
         duration_s=duration, loop=args.loop)
    return 0


def _loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="the event loop every mode runs on (uvloop: what chatlog serve "
                             "runs on where it is installed)")


def _run(coro: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(coro)``, on uvloop's loop when ``loop`` is ``uvloop``."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _ratio(a: list[float], b: list[float]) -> float:
    """Median over repetitions of ``a / b`` measured in the same repetition."""
    return round(statistics.median(x / y if y > 0 else 0.0 for x, y in zip(a, b, strict=True)), 3)


def client_cpu_row(rates: dict[str, list[Rate]]) -> dict[str, Any]:
    """Client CPU per awaited ``append_one`` (building the event included) over redis-py's
    per awaited XADD, in the same repetition; lower is better (goal <= 0.5x)."""
    per_rep = [a.cpu_us_per_op / b.cpu_us_per_op
               for a, b in zip(rates[SINGLE], rates[RAW_AWAITED], strict=True)
               if b.cpu_us_per_op > 0] or [0.0]
    return metric(f"{SINGLE}: client CPU / redis-py awaited XADD's", per_rep, "x",
                  higher_is_better=False, ratio=round(statistics.median(per_rep), 3),
                  ratio_best=round(min(per_rep), 3), ratio_to=RAW_AWAITED,
                  goal="<= 0.5x redis-py's CPU", goal_met=statistics.median(per_rep) <= 0.5)


def build_results(
    rates: dict[str, list[Rate]], runs: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """Rows for the table and the JSON line.

    A mode's ``ratio`` is the median over repetitions of (mode / its ceiling in the
    same repetition): the two ran seconds apart, so they shared the machine's load.
    ``ratio_best`` is the best repetition's. ``cpu_ratio`` is the same ratio
    estimated from CPU per event (client + server) instead of wall time: a group
    commit's client and server work do not overlap, so throughput is about
    1 / (client + server CPU per event), and CPU time hardly depends on the load.
    """

    def cpu_per_event(name: str) -> float:
        return statistics.median(r.cpu_us_per_op + r.server_cpu_us_per_op for r in rates[name])

    def ratios(name: str, ceiling: str) -> dict[str, Any]:
        per_rep = [
            a / b for a, b in zip(runs[name], runs[ceiling], strict=True) if b > 0
        ] or [0.0]
        return {
            "ratio": round(statistics.median(per_rep), 3),
            "ratio_best": round(max(per_rep), 3),
            "cpu_ratio": round(cpu_per_event(ceiling) / max(cpu_per_event(name), 1e-9), 3),
            "ratio_to": ceiling,
        }

    def goal_row(name: str, ceiling: str, goal: float, goal_text: str) -> dict[str, Any]:
        r = ratios(name, ceiling)
        return metric(name, runs[name], "events/s", **r, goal=goal_text,
                      goal_met=r["ratio"] >= goal)

    def bound_row(name: str, peer: str, goal: float) -> dict[str, Any]:
        r = ratios(name, peer)  # whether a goal of ``goal`` x peer could be met at all
        return metric(name, runs[name], "events/s", role="bound", **r,
                      reachable=r["ratio_best"] >= goal)

    return [
        metric(RAW_AWAITED, runs[RAW_AWAITED], "events/s", role="ceiling 1"),
        metric(RAW_PIPELINED, runs[RAW_PIPELINED], "events/s", role="ceiling 2"),
        metric(RAW_LEAN, runs[RAW_LEAN], "events/s", role="lean ceiling"),
        goal_row(SINGLE, RAW_AWAITED, 0.5, ">= 0.5x ceiling 1"),
        goal_row(BATCHED, RAW_PIPELINED, 0.5, ">= 0.5x ceiling 2"),
        goal_row(CONCURRENT, RAW_PIPELINED, 0.5, ">= 0.5x ceiling 2"),
        {**goal_row(CONCURRENT, RAW_LEAN, 0.5, ">= 0.5x the lean ceiling"),
         "metric": f"{CONCURRENT} (vs lean)"},
        {**goal_row(SINGLE, PEER_SINGLE, 1.2, ">= 1.2x the peer"),
         "metric": f"{SINGLE} (vs peer)"},
        {**bound_row(LEAN_AWAITED, PEER_SINGLE, 1.2), "metric": f"{LEAN_AWAITED} (vs peer)"},
        {**goal_row(BATCHED, PEER_BATCHED, 1.2, ">= 1.2x the peer"),
         "metric": f"{BATCHED} (vs peer)"},
        {**bound_row(LEAN_BATCH, PEER_BATCHED, 1.2), "metric": f"{LEAN_BATCH} (vs peer)"},
        client_cpu_row(rates),
        metric(PEER_SINGLE, runs[PEER_SINGLE], "events/s", role="peer",
               **ratios(PEER_SINGLE, RAW_AWAITED)),
        metric(PEER_BATCHED, runs[PEER_BATCHED], "events/s", role="peer",
               **ratios(PEER_BATCHED, RAW_PIPELINED)),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
