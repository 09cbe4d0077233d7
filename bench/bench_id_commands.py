"""Valkey commands an append runs (inside the append script), per event: a measure of the
append's server cost that the machine's load does not blur (``INFO commandstats``).

Server-made ids, client-chosen ids, and client-chosen ids once ids archived within their
window exist (the filter of archived ids is probed); one event alone and batches of 10.
Run from the repository's root: ``.venv/bin/python bench/bench_id_commands.py``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import message

from _common import valkey_server
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow

N = 1000
async def run(url: str, prefix: str, client_ids: bool, archived: bool,
              batch: int) -> tuple[float, dict[str, float]]:
    store = await EventStore.open(url, prefix=prefix)
    if archived:
        for i in range(3000):
            await store.append_one(message(thread_id=f"t{i%50}", content="x", event_id=uuid.uuid4()))
        store.archive = Archive.open(tempfile.mkdtemp())
        await Archiver(store, store.archive, HotWindow(events=1000, seconds=0, bytes=0)).run_pass()
    for i in range(100):
        await store.append_one(message(thread_id=f"t{i%50}", content="x", event_id=uuid.uuid4() if client_ids else None))
    await store.redis.config_resetstat()
    for i in range(0, N, batch):
        await store.append([message(thread_id=f"t{i%50}", content="x", event_id=uuid.uuid4() if client_ids else None) for _ in range(batch)])
    st = await store.redis.info("commandstats")
    await store.close()
    per = {k[8:]: round(v["calls"] / N, 2) for k, v in st.items() if not k.startswith("cmdstat_eval") and "config" not in k and "info" not in k}
    return round(sum(per.values()), 2), per

async def main() -> None:
    with valkey_server() as server:
        for batch in (1, 10):
            for name, c, a in (("server-made", False, False), ("client", True, False), ("client, filter exists", True, True)):
                total, per = await run(server.url, f"p{name}{batch}", c, a, batch)
                print(f"batch {batch} {name}: {total} commands/event {per}")
asyncio.run(main())
