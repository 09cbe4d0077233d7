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

from tests.helpers import eventually
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
        item = f"/v1/projects/Shared/workflows/{wf['workflow_id']}"
        await _json(await http.post(f"{b.url}{item}/start", json={}))
        await _json(await http.post(f"{b.url}{item}/approval-requests", json={"prompt": "ok?"}))
        waiting = asyncio.create_task(http.get(
            f"{b.url}{item}", params={"wait_for": "approved,rejected", "timeout": "30"}))

        async def blocked_on_b() -> bool:  # B read the workflow and waits for its events
            async with http.get(f"{b.url}/metrics") as resp:
                return "chatlog_workflow_waits 1.0" in await resp.text()

        await eventually(blocked_on_b, what="the long-poll blocking on B")
        assert not waiting.done()
        decided = await _json(await http.post(f"{a.url}{item}/approval",
                                              json={"approved": True, "comment": "from A"}))
        assert decided["state"] == "approved"
        view = await _json(await asyncio.wait_for(waiting, 30))
        assert view["state"] == "approved"


async def test_workers_on_two_nodes_share_the_jobs(
    store_factory: Any, cluster_url: str, key_prefix: str, tmp_path: Path
) -> None:
    from chatlog.identity import normalize_project_id
    from chatlog.orchestrator import Job, Orchestrator, Worker
    from chatlog.settings import Settings

    settings = Settings(redis_url=cluster_url, key_prefix=key_prefix, data_dir=tmp_path,
                        partitions=4, job_lease=0.6)
    stores = [await store_factory(cluster_url, partitions=4) for _ in range(2)]
    orchestrators = [Orchestrator(s, settings) for s in stores]
    done: dict[str, list[str]] = {}

    def handler_for(node: str) -> Any:
        async def handler(job: Job) -> dict[str, Any]:
            done.setdefault(job.id, []).append(node)
            await asyncio.sleep(0.05)  # work that takes time, so the other node gets a turn
            return {"by": node}
        return handler

    workers = [Worker(s, settings, handler_for(n), name=f"w-{n}")
               for s, n in zip(stores, "ab", strict=True)]
    tasks: list[asyncio.Task[None]] = []
    for o in orchestrators:
        await o.start()
    try:
        tasks = [asyncio.create_task(w.run()) for w in workers]
        jobs = []
        for i in range(24):
            project = normalize_project_id(f"jobs-{i % 6}")
            o = orchestrators[i % 2]
            wid = (await o.create_workflow(project, start_timeout=60)).workflow_id
            await o.start_workflow(project, wid)
            jobs.append(await o.enqueue_job(project, wid, kind="render"))
        await eventually(lambda: sum(w.processed for w in workers) >= len(jobs), timeout=60,
                         what="every job processed")
    finally:
        for w in workers:
            await w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for o in orchestrators:
            await o.stop()
    assert sorted(done) == sorted(jobs)
    assert all(len(nodes) == 1 for nodes in done.values())  # each job ran once
    share = [sum(1 for n in done.values() if n == [node]) for node in "ab"]
    assert min(share) >= len(jobs) // 6, f"unfair split {share}"
