"""Project-filtered replay of a 1% project in a big log, against an unfiltered replay.

On one fresh Valkey, a log of ``--events`` messages (default 200,000; 20,000 with
``--quick``) where one project in a hundred is "Small" and the rest "Big",
interleaved. Through the HTTP API (in-process aiohttp server, no background
services), pages of 1,000, measured alternately in each repetition:

- the whole log, unfiltered (the ceiling: every event read and sent);
- Small's events with ``?project=Small`` through the per-project index;
- the same with the index off (a log without the ``project_index`` flag), which
  scans every event of the partition as before the index existed.

Reported: seconds per whole replay (best and median), the ratio of each filtered
replay to the unfiltered one of the same repetition, and the bytes Valkey sent
for each (steady on a loaded machine). Goal: the indexed replay costs about the
project's share of the log (ratio near 0.01), not the log's.

``--archived``: the whole log is archived first (the real archiver, segments of
100,000 events), so every replay reads the archive tier; a third project, "Rare"
(one event in 2,000), shows what a hit costs there: the archive's project index
names row groups (16,384 rows), and a row group is read whole for each one. Each
replay reads a cold archive (a new ``Archive``: no row group cached).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from _common import bench_args, emit, metric, print_table, reset_server, scratch_dir, valkey_server
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.http import Services, create_app
from chatlog.identity import normalize_project_id
from chatlog.settings import Settings

SMALL = normalize_project_id("Small")
BIG = normalize_project_id("Big")
RARE = normalize_project_id("Rare")
RARE_EVERY = 2_000
WHOLE = "unfiltered replay of the whole log (ceiling)"
INDEXED = "?project=Small (1%), per-project index"
SCANNED = "?project=Small (1%), scanning (index off)"
RARE_INDEXED = "?project=Rare (0.05%), per-project index"


def _event(project: Any, i: int, thread: str) -> NewEvent:
    return NewEvent.of(
        MessageAppended(thread_id=thread, role="user", content=f"message {i} " + "x" * 200),
        project=project.key, project_name=project.display, aggregate_type="thread",
        aggregate_id=thread)


async def _fill(store: EventStore, events: int) -> int:
    small = 0
    for start in range(0, events, 100):
        thread = f"t{start // 100 % 50}"
        big = 98 if start % RARE_EVERY == 0 else 99
        await store.append([_event(BIG, i, thread) for i in range(start, start + big)])
        await store.append_one(_event(SMALL, start, thread))
        if big == 98:
            await store.append_one(_event(RARE, start, thread))
        small += 1
    return small


async def _archive_all(store: EventStore, directory: Path) -> None:
    """Seal the whole log into the archive with the real archiver (hot window: none)."""
    from chatlog.eventstore.archiver import Archiver, HotWindow

    archive = Archive.open(str(directory))
    archiver = Archiver(store, archive, HotWindow(0, 0.001, 0))
    await asyncio.sleep(0.01)  # every event older than the 1 ms age bound
    while True:
        (result,) = await archiver.run_pass([0])
        if not result.archived:
            break
    store.archive = archive


async def _sent(store: EventStore) -> int:
    info: dict[str, Any] = await store.redis.info("stats")
    return int(info["total_net_output_bytes"])


async def _replay(client: TestClient[Any, Any], params: dict[str, str]) -> int:
    n, query = 0, {**params, "limit": "1000"}
    while True:
        resp = await client.get("/v1/events", params=query)
        page = await resp.json()
        n += len(page["events"])
        if not page["has_more"]:
            return n
        query["after"] = page["cursor"]


async def measure(url: str, events: int, reps: int, tmp: Path,
                  archived: bool = False) -> dict[str, list[Any]]:
    await reset_server(url)
    store = await EventStore.open(url, prefix="pr")
    small = await _fill(store, events)
    rare = len(range(0, events, RARE_EVERY))
    if archived:
        await _archive_all(store, tmp / "archive")
    # A copy of the log read by a store that finds no index flag: the scanning path
    # (the flag goes once it is open, or opening would build the index).
    scan_prefix = "ps"
    for key in [k async for k in store.redis.scan_iter(match="pr:*")]:
        await store.redis.copy(key, scan_prefix + key.decode()[2:])
    scanning = await EventStore.open(url, prefix=scan_prefix)
    await scanning.redis.hdel(scanning.keys.meta, "project_index")
    scanning.archive = store.archive
    clients = []
    for i, s in enumerate((store, scanning)):
        settings = Settings(redis_url=url, data_dir=tmp / f"d{i}", key_prefix=s.keys.prefix)
        settings.data_dir.mkdir(exist_ok=True)
        client = TestClient(TestServer(create_app(settings, s, services=Services())))
        await client.start_server()
        clients.append(client)
    out: dict[str, list[Any]] = {WHOLE: [], INDEXED: [], SCANNED: [], RARE_INDEXED: []}
    try:
        for _ in range(reps):
            for name, client, params, want in (
                (WHOLE, clients[0], {}, events),
                (INDEXED, clients[0], {"project": "Small"}, small),
                (SCANNED, clients[1], {"project": "Small"}, small),
                (RARE_INDEXED, clients[0], {"project": "Rare"}, rare),
            ):
                if archived:  # a cold archive tier: nothing cached by an earlier replay
                    store.archive = scanning.archive = Archive.open(str(tmp / "archive"))
                sent = await _sent(store)
                began = time.perf_counter()
                got = await _replay(client, params)
                seconds = time.perf_counter() - began
                assert got == want, (name, got, want)
                out[name].append((seconds, await _sent(store) - sent))
    finally:
        for client in clients:
            await client.close()
        await store.close()
        await scanning.close()
    return out


def main() -> None:
    args = bench_args(__doc__.splitlines()[0] if __doc__ else "project replay",
                      add=lambda p: p.add_argument(
                          "--archived", action="store_true",
                          help="archive the whole log first: every replay reads the archive"))
    events = 20_000 if args.quick else 200_000
    with valkey_server() as server, scratch_dir("project-replay") as tmp:
        runs = asyncio.run(measure(server.url, events, args.reps, tmp, args.archived))
    whole = [s for s, _ in runs[WHOLE]]
    results = [metric(WHOLE, whole, "s", higher_is_better=False,
                      valkey_bytes=statistics.median(b for _, b in runs[WHOLE]))]
    for name in (INDEXED, SCANNED, RARE_INDEXED):
        seconds = [s for s, _ in runs[name]]
        ratios = [s / w for s, w in zip(seconds, whole, strict=True)]
        extra: dict[str, Any] = {
            "ratio": round(min(ratios), 4), "ratio_median": round(statistics.median(ratios), 4),
            "ratio_to": WHOLE, "valkey_bytes": statistics.median(b for _, b in runs[name])}
        if name == INDEXED:
            extra |= {"goal": "ratio near the project's share (0.01)",
                      "goal_met": min(ratios) < 0.05}
        results.append(metric(name, seconds, "s", higher_is_better=False, **extra))
    where = "archived " if args.archived else ""
    print_table(f"Replaying a 1% project of {events:,} {where}events vs the whole log", results)
    for r in results:
        print(f"{r['metric']}: Valkey sent {r['valkey_bytes'] / 1e6:,.2f} MB per replay")
    emit("project_replay_archived" if args.archived else "project_replay", results, args,
         events=events)


if __name__ == "__main__":
    main()
