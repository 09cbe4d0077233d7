"""Two ``chatlog serve`` processes on one cluster (16 partitions), each with its own SQLite.

Only CHATLOG_REDIS_URL and CHATLOG_PARTITIONS differ from a single-server
deployment. A message appended through node A is readable through node B
with ``min_position``, appears on node B's SSE stream, and a wait on node B
ends on an approval posted to node A.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.http.conftest import read_sse
from tests.http.serving import Served

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def nodes(cluster_url: str, key_prefix: str, tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    env = {"CHATLOG_REDIS_URL": cluster_url, "CHATLOG_PARTITIONS": "16",
           "CHATLOG_KEY_PREFIX": key_prefix}
    a = Served(tmp_path / "a", **env)
    try:
        b = Served(tmp_path / "b", **env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    codes = (a.stop(), b.stop())
    assert codes == (0, 0), (a.stderr[-2000:], b.stderr[-2000:])


async def _json(resp: aiohttp.ClientResponse, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_read_your_writes_sse_and_waits_across_nodes(nodes: tuple[Served, Served]) -> None:
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        stream = await http.get(f"{b.url}/v1/events/stream", params={"project": "Shared"})
        assert stream.status == 200
        posted = []
        for i in range(5):  # several threads of one project, then other projects
            posted.append(await _json(await http.post(
                f"{a.url}/v1/projects/Shared/messages",
                json={"role": "user", "content": f"hello {i}"}), 201))
        for i in range(8):
            await _json(await http.post(f"{a.url}/v1/projects/other-{i}/messages",
                                        json={"role": "user", "content": "x"}), 201)

        # read-your-writes on the other node: B waits until its read model has it
        last = posted[-1]
        page = await _json(await http.get(
            f"{b.url}/v1/projects/shared/threads/{last['thread_id']}/messages",
            params={"min_position": last["position"]}))
        assert [m["content"] for m in page["messages"]] == ["hello 4"]
        threads = await _json(await http.get(f"{b.url}/v1/projects/SHARED/threads",
                                             params={"min_position": last["position"]}))
        assert len(threads["threads"]) == 5

        # B's SSE stream carries what was appended through A, in order, nothing else
        got = await read_sse(stream, 5, timeout=20)
        assert [d["id"] for _, d in got] == [p["message_id"] for p in posted]
        stream.close()

        # a wait registered on B ends on an approval posted to A
        wf = await _json(await http.post(f"{b.url}/v1/projects/Shared/workflows",
                                         json={"name": "publish"}), 201)
        item = f"/v1/projects/Shared/workflows/{wf['id']}"
        await _json(await http.post(f"{b.url}{item}/start", json={}))
        await _json(await http.post(f"{b.url}{item}/approval-requests", json={"prompt": "ok?"}))
        waiting = asyncio.create_task(http.get(
            f"{b.url}{item}", params={"wait_for": "approved,rejected", "timeout": "30"}))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        decided = await _json(await http.post(f"{a.url}{item}/approval",
                                              json={"approved": True, "comment": "from A"}))
        assert decided["state"] == "approved"
        view = await _json(await asyncio.wait_for(waiting, 30))
        assert view["state"] == "approved"
