"""``chatlog tail --project`` reads that project's events through the per-project index,
as the HTTP replay does: what Valkey sends is about that project's events, not its
partition's (a real ``chatlog`` process against a real Valkey)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from chatlog.eventstore import EventStore
from tests.helpers import message


async def _sent(store: EventStore) -> int:
    redis: Any = store.redis
    return int((await redis.info("stats"))["total_net_output_bytes"])


async def test_tail_project_costs_that_projects_events_not_its_partitions(
    redis_url: str, key_prefix: str
) -> None:
    store = await EventStore.open(redis_url, prefix=key_prefix)
    try:
        noise = "x" * 20_000
        await store.append([message("Other", "t", noise) for _ in range(150)])
        mine = [message("Mine", "t", f"m{i}") for i in range(3)]
        for event in mine[:2]:
            await store.append([event])
        await store.append([message("Other", "t-late", noise) for _ in range(50)])
        await store.append([mine[2]])
        env = {**os.environ, "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix}
        before = await _sent(store)
        proc = subprocess.run([sys.executable, "-m", "chatlog", "tail", "--no-follow",
                               "--project", "Mine"], env=env, capture_output=True, text=True,
                              timeout=60)
        sent = await _sent(store) - before
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["data"]["content"] for e in events] == ["m0", "m1", "m2"]
        assert [e["id"] for e in events] == [str(e.id) for e in mine]
        # The partition holds 4 MB of the other project's events; the tail got none of them.
        assert sent < 500_000, f"Valkey sent {sent} bytes for 3 small events"
        resumed = subprocess.run([sys.executable, "-m", "chatlog", "tail", "--no-follow",
                                  "--project", "Mine", "--after", events[0]["cursor"]],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert [json.loads(line)["data"]["content"]
                for line in resumed.stdout.splitlines()] == ["m1", "m2"]
    finally:
        await store.close()
