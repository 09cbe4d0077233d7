"""``chatlog tail --project`` reads that project's events through the per-project index,
as the HTTP replay does: what Valkey sends is about that project's events, not its
partition's (a real ``chatlog`` process against a real Valkey)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from chatlog.eventstore import EventStore
from tests.helpers import message


async def _tail(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``chatlog tail --no-follow ARGS`` in a process of its own: exit code, out, err."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatlog", "tail", "--no-follow", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


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
        code, out, err = await _tail(env, "--project", "Mine")
        sent = await _sent(store) - before
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["data"]["content"] for e in events] == ["m0", "m1", "m2"]
        assert [e["id"] for e in events] == [str(e.id) for e in mine]
        # The partition holds 4 MB of the other project's events; the tail got none of them.
        assert sent < 500_000, f"Valkey sent {sent} bytes for 3 small events"
        code, out, err = await _tail(env, "--project", "Mine", "--after", events[0]["cursor"])
        assert code == 0, err
        assert [json.loads(line)["data"]["content"] for line in out.splitlines()] == ["m1", "m2"]
    finally:
        await store.close()
