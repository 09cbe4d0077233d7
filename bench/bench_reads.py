"""Replay/rebuild read rate from Redis: XRANGE entries/s, lean connection vs redis-py.

On one fresh Valkey (the embedded default's settings), the log is filled with
``--events`` message events (default 300,000; 30,000 with ``--quick``) in
batches of 100, then read whole, in the same run, alternating:

- raw redis-py ``XRANGE`` (5,000 entries a call, parsed into dicts as redis-py
  does by default): the redis-py ceiling;
- ``store.scan_flat`` (10,000 a call, the rebuild's read) over the lean path
  and over redis-py (the same store with the lean path off);
- ``store.read_flat`` pages of 5,000 (checked against the trim horizon: one
  MULTI of GET + XRANGE; the replay's read) over both paths.

Rates are entries/s; CPU is the client's, per entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from _common import (
    PROJECT,
    Rate,
    bench_args,
    emit,
    message_event,
    metric,
    print_table,
    reset_server,
    thread_ids,
    valkey_server,
)
from chatlog.eventstore import EventStore
from chatlog.eventstore._topology import SingleServer
from chatlog.eventstore.codec import START
from chatlog.eventstore.connection import text

RAW = "raw redis-py XRANGE x5000"
SCAN_LEAN = "store.scan_flat, lean"
SCAN_PY = "store.scan_flat, redis-py"
PAGES_LEAN = "store.read_flat pages, lean"
PAGES_PY = "store.read_flat pages, redis-py"


async def fill(store: EventStore, events: int) -> None:
    threads = thread_ids(100)
    for b in range(events // 100):
        t = threads[b % len(threads)]
        await store.append([message_event(b * 100 + k, t) for k in range(100)])


async def timed(read: Callable[[], Awaitable[int]]) -> Rate:
    cpu, start = time.process_time(), time.perf_counter()
    n = await read()
    return Rate(n, time.perf_counter() - start, time.process_time() - cpu)


async def measure(url: str, events: int, rounds: int) -> dict[str, Rate]:
    await reset_server(url)
    lean = await EventStore.open(url, prefix="br")
    plain = await EventStore.open(url, prefix="br")
    # The same store with its hot paths on redis-py, for the comparison.
    await plain._topology.close()
    plain._topology = SingleServer(plain.redis, plain._topology.tail_redis, lean=False)  # type: ignore[arg-type]
    raw = aioredis.from_url(url)
    key = lean.keys.log(0)
    await fill(lean, events)

    async def raw_read() -> int:
        n, after = 0, "-"
        while True:
            entries = await raw.xrange(key, after, "+", 5000)
            n += len(entries)
            if len(entries) < 5000:
                return n
            after = f"({text(entries[-1][0])}"

    def scan(store: EventStore) -> Callable[[], Awaitable[int]]:
        async def read() -> int:
            n = 0
            async for chunk in store.scan_flat(0):
                n += len(chunk)
            return n
        return read

    def pages(store: EventStore) -> Callable[[], Awaitable[int]]:
        async def read() -> int:
            n, after = 0, START
            while True:
                page = await store.read_flat(0, after, 5000)
                n += len(page)
                if len(page) < 5000:
                    return n
                after = text(page[-1][0])
        return read

    modes: dict[str, Callable[[], Awaitable[int]]] = {
        RAW: raw_read, SCAN_LEAN: scan(lean), SCAN_PY: scan(plain),
        PAGES_LEAN: pages(lean), PAGES_PY: pages(plain),
    }
    totals = {name: Rate(0, 0.0) for name in modes}
    try:
        for _ in range(rounds):
            for name, read in modes.items():
                r = await timed(read)
                assert r.ops == events, (name, r.ops)
                t = totals[name]
                totals[name] = Rate(t.ops + r.ops, t.seconds + r.seconds, t.cpu_s + r.cpu_s)
    finally:
        await lean.close()
        await plain.close()
        await raw.aclose()
    return totals


def main() -> None:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "read benchmark")
    events = 30_000 if args.quick else 300_000
    rounds = 1 if args.quick else 2
    runs: dict[str, list[Rate]] = {}
    with valkey_server() as server:
        for rep in range(args.reps):
            for name, rate in asyncio.run(measure(server.url, events, rounds)).items():
                runs.setdefault(name, []).append(rate)
            print(f"rep {rep + 1}/{args.reps}: " + " | ".join(
                f"{n} {rs[-1].per_s:,.0f}/s" for n, rs in runs.items()), flush=True)

    def rates(name: str) -> list[float]:
        return [r.per_s for r in runs[name]]

    def cpu_us(name: str) -> float:
        return round(min(r.cpu_us_per_op for r in runs[name]), 2)

    def row(name: str, vs: str | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {"client_cpu_us_per_entry": cpu_us(name)}
        if vs is not None:
            extra |= {"ratio": round(max(rates(name)) / max(rates(vs)), 2), "ratio_to": vs}
        return metric(name, rates(name), "entries/s", **extra)

    results = [row(RAW), row(SCAN_LEAN, SCAN_PY), row(SCAN_PY, RAW), row(PAGES_LEAN, PAGES_PY),
               row(PAGES_PY, RAW)]
    print_table(f"Reading {events:,} events of one partition (project {PROJECT.display})",
                results)
    print("client CPU per entry (us, best rep): " + " | ".join(
        f"{name} {cpu_us(name)}" for name in runs))
    emit("reads", results, args, events=events)


if __name__ == "__main__":
    main()
