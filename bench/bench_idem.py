"""Redis bytes and server CPU per remembered event id (the idempotency record).

Appends ``--events`` message events (256 concurrent ``append_one``) to a fresh
embedded Valkey, half with a client-supplied event id, half with a server-made
one, and reports: ``used_memory`` growth per event beside the same growth for a
log whose ids are not remembered (the hot tail alone), keys per event, and the
server's time per event in scripts (``INFO commandstats``) and its CPU per event
(``INFO cpu``: user + system, AOF writes and fsyncs included).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from _common import PROJECT, bench_args, message_data, server_cpu_seconds, valkey_server
from chatlog.events import NewEvent
from chatlog.eventstore import EventStore


def event(i: int, supplied: bool) -> NewEvent:
    return NewEvent.of(
        message_data(i, f"t{i % 100}"), project=PROJECT.key, project_name=PROJECT.display,
        aggregate_type="thread", aggregate_id=f"t{i % 100}",
        event_id=uuid.uuid4() if supplied else None)


async def run(url: str, n: int, supplied: bool) -> dict[str, float]:
    r = aioredis.from_url(url)
    await r.flushall()
    store = await EventStore.open(url, prefix="idem")
    await store.append_one(event(0, supplied))
    await r.config_resetstat()
    mem0 = int((await r.info("memory"))["used_memory"])
    keys0 = int(await r.dbsize())
    todo = iter(range(1, n + 1))

    async def worker() -> None:
        for i in todo:
            await store.append_one(event(i, supplied))

    t0, c0 = time.perf_counter(), await server_cpu_seconds(url)
    await asyncio.gather(*(worker() for _ in range(256)))
    wall, cpu = time.perf_counter() - t0, await server_cpu_seconds(url) - c0
    stats = await r.info("commandstats")
    usec = sum(float(v["usec"]) for v in stats.values())
    script = sum(float(v["usec"]) for k, v in stats.items()
                 if k.startswith("cmdstat_eval"))
    mem1 = int((await r.info("memory"))["used_memory"])
    keys1 = int(await r.dbsize())
    stream = int(await r.memory_usage(store.keys.log(0)) or 0)
    await store.close()
    await r.aclose()
    return {"bytes/event": (mem1 - mem0) / n, "stream bytes/event": stream / (n + 1),
            "keys/event": (keys1 - keys0) / n, "server us/event (scripts)": script / n,
            "server us/event (all)": usec / n, "server CPU us/event": cpu * 1e6 / n,
            "appends/s": n / wall}


async def main() -> None:
    args = bench_args(__doc__ or "")
    n = 20_000 if args.quick else 100_000
    with valkey_server() as server:
        for supplied in (True, False):
            res = await run(server.url, n, supplied)
            label = "client ids" if supplied else "server ids"
            print(f"{label:>10}: " + ", ".join(f"{k} {v:,.2f}" for k, v in res.items()),
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
