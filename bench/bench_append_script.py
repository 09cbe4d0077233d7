"""Valkey's CPU per appended event inside the append scripts, and what each part costs.

Appends made through the store (256 concurrent ``append_one`` calls over 100 threads,
concurrent appends each to a thread of its own, batches of 100 events of one thread,
then ``append_one`` awaited one at a time) are recorded as the script calls they sent (group commits
and single appends, over the lean connection); then the same calls are replayed,
pipelined and back to back, into an emptied server, once per script variant:

- ``as is``: the store's scripts;
- ``without the project index``: no ``XADD`` to ``<tag>:pidx:<project>``;
- ``without id records``: no lookup (``recall``) and no write (``remember``) of
  remembered event ids;
- ``--compare-with SRC``: the scripts of another checkout's ``src`` (say, the
  main branch's), replayed with the same calls (their arguments must mean the same).

A replay measures only the server, warm and without waiting on the client: the
``EVALSHA`` time of ``INFO commandstats`` (usec per event) and the server's CPU
(user + system: with ``appendfsync always`` the system part holds the fsyncs).
A variant whose text substitution no longer matches the scripts is left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import runpy
import statistics
from pathlib import Path
from typing import Any

import redis

from _common import (
    bench_args,
    emit,
    format_table,
    message_event,
    metric,
    print_table,
    valkey_server,
)
from bench_append import THREADS, chat_event
from chatlog.eventstore import EventStore

#: Each variant: (name, [(regular expression, replacement), ...]) applied to the scripts.
VARIANTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("without the project index", [(re.escape("redis.call('XADD', pidx, pos, 'e', '')"), "")]),
    ("without id records", [
        (r"local prior, start, maybe = lookup\(st, rec, number, ARGV\[base\], legacy\)",
         "local prior, start, maybe = false, nil, false"),
        (r"\n\s*remember\(st, rec, number, pos, version, string\.sub\(rec, 4, 11\)\)", "\n"),
    ]),
]


async def record_calls(url: str, concurrent: int, batches: int,
                       singles: int) -> dict[str, list[tuple[Any, ...]]]:
    """The script calls (``EVALSHA`` commands) the store sends for each workload."""
    store = await EventStore.open(url)
    lean = store._topology.lean  # a bench may look inside
    assert lean is not None, "the lean connection is off"
    calls: list[tuple[Any, ...]] = []
    many, one = lean.execute_many, lean.evalsha

    async def spy_many(commands: list[tuple[Any, ...]]) -> list[Any]:
        results = await many(commands)
        for command, result in zip(commands, results, strict=True):
            if not isinstance(result, BaseException):  # a NOSCRIPT try ran nothing
                head = command[1] if command[0] == "EVALSHA" else sha1(command[1])
                calls.append(("EVALSHA", head, *command[2:]))
        return results

    async def spy_one(sha: str, script: str, keys: list[Any], args: list[Any]) -> Any:
        result = await one(sha, script, keys, args)
        calls.append(("EVALSHA", sha, len(keys), *keys, *args))
        return result

    lean.execute_many = spy_many  # type: ignore[method-assign]
    lean.evalsha = spy_one  # type: ignore[method-assign]
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        left, i = [concurrent], [0]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                i[0] += 1
                await store.append_one(chat_event(i[0]))

        await asyncio.gather(*(worker() for _ in range(256)))
        out["256 concurrent append_one"], calls[:] = list(calls), []
        # each append to an aggregate of its own (as a burst that ends many waits)
        await asyncio.gather(*(store.append_one(message_event(k, f"thread-solo-{k}"))
                               for k in range(concurrent // 2)))
        out["concurrent, one append per aggregate"], calls[:] = list(calls), []
        for b in range(batches):
            await store.append([chat_event(10**6 + b + k * len(THREADS)) for k in range(100)])
        out["batches of 100"], calls[:] = list(calls), []
        for k in range(singles):
            await store.append_one(chat_event(2 * 10**6 + k))
        out["append_one, one at a time"] = list(calls)
    finally:
        await store.close()
    return out


def sha1(script: str | bytes) -> str:
    raw = script.encode() if isinstance(script, str) else script
    return hashlib.sha1(raw).hexdigest()


def scripts_of(src: Path) -> dict[str, str]:
    """The two append scripts (the library + each entry point) of a checkout's ``src``."""
    lib = (src / "chatlog" / "eventstore" / "append.lua").read_text()
    entries = runpy.run_path(str(src / "chatlog" / "eventstore" / "scripts.py"))
    return {"one": lib + entries["APPEND_ONE"], "many": lib + entries["APPEND_MANY"]}


def edited(scripts: dict[str, str], edits: list[tuple[str, str]]) -> dict[str, str] | None:
    """``scripts`` with every edit made in each (None when one does not match)."""
    out = {}
    for kind, text in scripts.items():
        for pattern, replacement in edits:
            text, hits = re.subn(pattern, replacement, text)
            if not hits:
                return None
        out[kind] = text
    return out


def events_in(command: tuple[Any, ...], many_sha: str) -> int:
    keys = int(command[2])
    if command[1] == many_sha:  # ARGV[2]: the number of appends, one event each or more
        argv = command[3 + keys:]
        count, a, n = int(argv[1]), 2, 0
        for _ in range(count):
            events = int(argv[a + 2])
            n, a = n + events, a + 3 + 4 * events
        return n
    return int(command[3 + keys + 3])  # APPEND_ONE's ARGV[4]


def replay(r: redis.Redis, calls: list[tuple[Any, ...]], shas: dict[str, str],
           scripts: dict[str, str], events: int) -> tuple[float, float]:
    """Usec of EVALSHA and server CPU us per event, replaying ``calls`` with ``scripts``."""
    r.flushall(asynchronous=False)  # freed now, not by a thread during the next replay
    new = {kind: r.script_load(text) for kind, text in scripts.items()}
    swap = {shas[kind]: new[kind] for kind in shas}
    r.config_resetstat()
    cpu0 = r.info("cpu")
    for start in range(0, len(calls), 50):
        pipe = r.pipeline(transaction=False)
        for command in calls[start:start + 50]:
            pipe.execute_command("EVALSHA", swap[command[1]], *command[2:])
        pipe.execute()
    cpu1 = r.info("cpu")
    usec = r.info("commandstats")["cmdstat_evalsha"]["usec"]
    cpu = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_user", "used_cpu_sys"))
    return usec / events, cpu / events * 1e6


def main() -> int:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "append scripts", add=lambda p: (
        p.add_argument("--compare-with", type=Path, default=None, metavar="SRC",
                       help="another checkout's src dir: replay its append scripts too")))
    concurrent, batches, singles = (5_000, 20, 500) if args.quick else (20_000, 100, 3_000)
    own = scripts_of(Path(__file__).resolve().parents[1] / "src")
    variants: dict[str, dict[str, str]] = {"as is": own}
    for name, edits in VARIANTS:
        changed = edited(own, edits)
        if changed is None:
            print(f"(left out: {name}: the scripts no longer contain what it removes)")
        else:
            variants[name] = changed
    if args.compare_with is not None:
        variants[f"scripts of {args.compare_with}"] = scripts_of(args.compare_with)
    results: list[dict[str, Any]] = []
    table: list[list[Any]] = []
    with valkey_server() as server:
        workloads = asyncio.run(record_calls(server.url, concurrent, batches, singles))
        r = redis.Redis.from_url(server.url)
        try:
            shas = {"one": r.script_load(own["one"]), "many": r.script_load(own["many"])}
            for workload, calls in workloads.items():
                events = sum(events_in(c, shas["many"]) for c in calls)
                runs: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
                order = list(variants.items())
                for rep in range(args.reps):  # interleaved, each variant first in turn
                    for name, scripts in order[rep % len(order):] + order[:rep % len(order)]:
                        runs[name].append(replay(r, calls, shas, scripts, events))
                for name, got in runs.items():
                    usec, cpu = [g[0] for g in got], [g[1] for g in got]
                    label = f"{workload}: {name}"
                    results.append(metric(f"{label}: script usec/event", usec, "us",
                                          higher_is_better=False))
                    results.append(metric(f"{label}: server CPU/event", cpu, "us",
                                          higher_is_better=False))
                    table.append([workload, name, round(min(usec), 1),
                                  round(statistics.median(usec), 1), round(min(cpu), 1),
                                  round(statistics.median(cpu), 1)])
                print(f"{workload}: {len(calls)} script calls, {events} events", flush=True)
        finally:
            r.close()
    print(format_table(["workload", "scripts", "usec/event best", "median",
                        "server CPU us/event best", "median"], table))
    print_table("Append scripts replayed (pipelined, warm)", results)
    emit("append_script", results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
