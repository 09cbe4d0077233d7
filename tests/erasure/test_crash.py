"""kill -9 of ``chatlog serve`` (and of its Valkey) in the middle of an erasure, then a
restart: the erasure completes by itself, no file keeps the erased text, and the
other project's events are all still there."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.identity import normalize_project_id
from tests.erasure.test_erasure import files_holding, project_entries, seal
from tests.helpers import eventually
from tests.http.serving import Served

SHOP = normalize_project_id("Shop").key


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.stop()


async def _post(http: aiohttp.ClientSession, url: str, project: str, thread: str,
                content: str) -> dict[str, Any]:
    async with http.post(f"{url}/v1/projects/{project}/messages",
                         json={"thread_id": thread, "role": "user", "content": content}) as r:
        assert r.status == 201, await r.text()
        doc: dict[str, Any] = await r.json()
        return doc


@pytest.mark.parametrize("step", ["tombstoned", "redis", "archive"])
async def test_kill_9_during_erasure_then_restart_completes_it(
        served: list[Served], short_tmp: Path, step: str) -> None:
    data = short_tmp / f"k{uuid.uuid4().hex[:6]}"
    marker = secrets.token_hex(32)
    first = Served(data, CHATLOG_FAULT_ERASE_AFTER=step)
    served.append(first)
    async with aiohttp.ClientSession() as http:
        for i in range(4):
            await _post(http, first.url, "Blog", "t1", f"{i} {marker}")
            await _post(http, first.url, "Shop", "s1", f"shop {i}")
        last = await _post(http, first.url, "Blog", "t2", "stays")
        async with http.get(f"{first.url}/v1/projects/Blog/threads",
                            params={"min_position": last["position"]}) as r:
            assert r.status == 200
        archive = Archive.open(str(data / "archive"))
        store = await EventStore.open(f"unix://{data}/valkey/valkey.sock")
        try:
            await seal(store, archive, 4)
            shop = await project_entries(store, archive, str(SHOP))
        finally:
            await store.close()
        assert files_holding(data, marker)
        with pytest.raises(aiohttp.ClientError):
            await http.delete(f"{first.url}/v1/projects/Blog/threads/t1")
        assert first.proc.wait(timeout=30) == -signal.SIGKILL
        # The machine went down: its Valkey too (unless it already left with its parent:
        # serve's Valkey gets SIGTERM when serve dies, and removes its pid file).
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((data / "valkey" / "valkey.pid").read_text()), signal.SIGKILL)

        second = Served(data)
        served.append(second)
        store = await EventStore.open(f"unix://{data}/valkey/valkey.sock")
        try:
            await eventually(lambda: _none_pending(store), timeout=60,
                             what="the erasure to complete after the restart")
            assert await project_entries(store, archive, str(SHOP)) == shop
        finally:
            await store.close()
        assert files_holding(data, marker) == []
        async with http.get(f"{second.url}/v1/projects/Blog/threads/t1/messages") as r:
            assert r.status == 404
        async with http.get(f"{second.url}/v1/projects/Blog/threads/t2/messages") as r:
            assert [m["content"] for m in (await r.json())["messages"]] == ["stays"]


async def _none_pending(store: EventStore) -> bool:
    return int(await store.redis.scard(store.keys.erasures)) == 0
