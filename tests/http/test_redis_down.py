"""Redis stops mid-test: 503 with Retry-After, nothing half-written; it comes back by itself."""

from __future__ import annotations

import asyncio

import pytest

from chatlog.http import STATE
from chatlog.identity import normalize_project_id
from tests.helpers import eventually
from tests.http.conftest import post_message, read_sse

pytestmark = pytest.mark.slow


async def test_redis_down_is_503_and_the_service_recovers_without_restart(
    api, valkey_factory
) -> None:
    server = valkey_factory()
    client = await api(url=server.url)
    before = await post_message(client, "Ops", "before")
    stream = await client.get("/v1/events/stream", params={"project": "Ops"})
    assert (await read_sse(stream, 1))[0][1]["id"] == before["message_id"]
    # Make sure the stream is live (subscribed to the fan-out, catch-up done).
    await eventually(lambda: len(client.app[STATE].fanout) >= 1, what="the stream subscribed")
    live = await post_message(client, "Ops", "live", thread_id=before["thread_id"])
    assert (await read_sse(stream, 1))[0][1]["id"] == live["message_id"]

    server.stop()  # by its pid (SIGTERM: it flushes its AOF)
    body = {"thread_id": before["thread_id"], "role": "user", "content": "during"}
    for _ in range(3):
        resp = await client.post("/v1/projects/Ops/messages", json=body)
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1
        assert "unavailable" in (await resp.json())["detail"]
    assert (await client.get("/v1/events")).status == 503
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200

    valkey_factory(data_dir=server.dir)  # the same data dir and socket

    async def append_after() -> dict | None:  # the clients reconnect on their next command
        resp = await client.post("/v1/projects/Ops/messages", json={**body, "content": "after"})
        if resp.status == 201:
            return await resp.json()
        assert resp.status == 503
        return None

    after = await eventually(append_after, interval=0.1, what="appends recovering")
    assert isinstance(after, dict)
    assert after["version"] == 3  # nothing of the refused appends was written

    # The projector and the SSE fan-out resumed too.
    resp = await client.get(f"/v1/projects/Ops/threads/{before['thread_id']}/messages",
                            params={"min_position": after["position"]})
    assert [m["content"] for m in (await resp.json())["messages"]] == ["before", "live", "after"]
    assert (await read_sse(stream, 1))[0][1]["id"] == after["message_id"]
    stream.close()
    # The orchestrator's tailers resumed: a long-poll sees a transition made now.
    wf = await (await client.post("/v1/projects/Ops/workflows", json={})).json()
    poll = asyncio.ensure_future(client.get(f"/v1/projects/Ops/workflows/{wf['workflow_id']}",
                                            params={"wait_for": "running", "timeout": "20"}))
    orchestrator = client.app[STATE].services.orchestrator
    assert orchestrator is not None
    await asyncio.wait_for(
        orchestrator.until_blocked(normalize_project_id("Ops"), wf["workflow_id"]), 10)
    started = await client.post(f"/v1/projects/Ops/workflows/{wf['workflow_id']}/start", json={})
    assert started.status == 200
    resp = await poll
    assert resp.status == 200 and (await resp.json())["state"] == "running"

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(ready, what="/readyz answering 200 again")
