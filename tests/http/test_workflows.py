"""Workflows over HTTP: the happy path, invalid transitions (409), long-polls, timeouts."""

from __future__ import annotations

import asyncio

from chatlog.http import STATE
from chatlog.identity import normalize_project_id

BASE = "/v1/projects/Blog-Project/workflows"


async def _ok(resp, status: int = 200) -> dict:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_create_start_approve_complete(client) -> None:
    wf = await _ok(await client.post(BASE, json={"name": "publish", "input": {"post": 7},
                                                 "workflow_id": "wf-publish-7"}), 201)
    assert wf["workflow_id"] == "wf-publish-7"
    assert wf["state"] == "waiting_for_start" and wf["awaiting"] == "start_task"
    assert wf["deadline"] is not None
    item = f"{BASE}/{wf['workflow_id']}"
    assert (await _ok(await client.post(f"{item}/start", json={})))["state"] == "running"
    asked = await _ok(await client.post(f"{item}/approval-requests", json={"prompt": "ok?"}))
    assert asked["state"] == "awaiting_approval" and asked["awaiting"] == "approval"
    decided = await _ok(await client.post(f"{item}/approval",
                                          json={"approved": True, "comment": "fine"}))
    assert decided["state"] == "approved"
    done = await _ok(await client.post(f"{item}/complete", json={"result": {"url": "/p/7"}}))
    assert done["state"] == "completed" and done["result"] == {"url": "/p/7"}
    got = await _ok(await client.get(item, params={"min_position": done["position"]}))
    assert [h["type"] for h in got["history"]] == [
        "workflow.created", "workflow.started", "workflow.approval_requested",
        "workflow.approved", "workflow.completed"]


async def test_invalid_transition_is_409_naming_the_state(client) -> None:
    wf = await _ok(await client.post(BASE, json={}), 201)
    resp = await client.post(f"{BASE}/{wf['workflow_id']}/approval", json={"approved": True})
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    doc = await resp.json()
    assert doc["state"] == "waiting_for_start"
    assert "waiting_for_start" in doc["detail"]
    again = await client.post(BASE, json={"workflow_id": wf["workflow_id"]})
    assert again.status == 409
    bad = await client.post(f"{BASE}/{wf['workflow_id']}/approval", json={"approved": "yes"})
    assert bad.status == 400
    assert (await client.post(f"{BASE}/{wf['workflow_id']}/fail", json={})).status == 400
    huge = await client.post(BASE, data=b'{"input": {"n": 99999999999999999999999}}')
    assert huge.status == 400 and "64-bit" in (await huge.json())["detail"]
    assert (await client.post(f"{BASE}/wf-missing/start", json={})).status == 404


async def test_long_poll_returns_when_the_state_is_reached(client) -> None:
    wf = await _ok(await client.post(BASE, json={}), 201)
    item = f"{BASE}/{wf['workflow_id']}"
    poll = asyncio.ensure_future(
        client.get(item, params={"wait_for": "running", "timeout": "10"}))
    orchestrator = client.app[STATE].services.orchestrator
    await asyncio.wait_for(orchestrator.until_blocked(
        normalize_project_id("Blog-Project"), wf["workflow_id"]), 10)
    assert not poll.done()
    await _ok(await client.post(f"{item}/start", json={}))
    got = await _ok(await poll)
    assert got["state"] == "running"


async def test_long_poll_timeout_is_408_and_unknown_state_is_400(client) -> None:
    wf = await _ok(await client.post(BASE, json={}), 201)
    item = f"{BASE}/{wf['workflow_id']}"
    resp = await client.get(item, params={"wait_for": "approved", "timeout": "0.2"})
    assert resp.status == 408
    assert "approved" in (await resp.json())["detail"]
    resp = await client.get(item, params={"wait_for": "sleeping", "timeout": "0.2"})
    assert resp.status == 400


async def test_start_timeout_fails_the_workflow(api) -> None:
    client = await api(start_timeout=0.3)
    wf = await _ok(await client.post(BASE, json={}), 201)
    got = await _ok(await client.get(f"{BASE}/{wf['workflow_id']}",
                                     params={"wait_for": "failed", "timeout": "10"}))
    assert got["state"] == "failed"
    assert "start_task" in got["reason"]


async def test_list_workflows_newest_first_by_state_and_pages(client) -> None:
    made = [await _ok(await client.post(BASE, json={"name": f"w{i}"}), 201) for i in range(3)]
    started = await _ok(await client.post(f"{BASE}/{made[0]['workflow_id']}/start", json={}))
    page = await _ok(await client.get(BASE, params={"min_position": started["position"]}))
    assert [w["workflow_id"] for w in page["workflows"]] == [
        made[0]["workflow_id"], made[2]["workflow_id"], made[1]["workflow_id"]]
    assert page["workflows"][0]["state"] == "running"
    assert page["workflows"][1]["awaiting"] == "start_task"
    assert page["workflows"][1]["deadline"] is not None
    running = await _ok(await client.get(BASE, params={"state": "running"}))
    assert [w["workflow_id"] for w in running["workflows"]] == [made[0]["workflow_id"]]
    seen, cursor = [], None
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await _ok(await client.get(BASE, params=params))
        seen += [w["workflow_id"] for w in page["workflows"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [made[0]["workflow_id"], made[2]["workflow_id"], made[1]["workflow_id"]]
    assert (await client.get(BASE, params={"state": "sleeping"})).status == 400
    assert (await client.get(BASE, params={"cursor": "nope"})).status == 400
    other = await _ok(await client.get("/v1/projects/Elsewhere/workflows"))
    assert other["workflows"] == []
