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


async def test_long_poll_not_yet_is_200_with_reached_false_and_unknown_state_is_400(
    client,
) -> None:
    wf = await _ok(await client.post(BASE, json={}), 201)
    item = f"{BASE}/{wf['workflow_id']}"
    resp = await client.get(item, params={"wait_for": "approved", "timeout": "0.2"})
    assert resp.status == 200  # not a 408 that proxies and clients retry by themselves
    doc = await resp.json()
    assert doc["reached"] is False and doc["state"] == "waiting_for_start"
    doc = await _ok(await client.get(item, params={"wait_for": "waiting_for_start"}))
    assert doc["reached"] is True
    assert "reached" not in await _ok(await client.get(item))  # a plain read
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


async def test_state_timed_out_lists_the_workflows_that_timed_out(api) -> None:
    client = await api(start_timeout=0.3)
    late = await _ok(await client.post(BASE, json={}), 201)
    other = await _ok(await client.post(BASE, json={}), 201)
    await _ok(await client.post(f"{BASE}/{other['workflow_id']}/fail", json={"reason": "by hand"}))
    got = await _ok(await client.get(f"{BASE}/{late['workflow_id']}",
                                     params={"wait_for": "failed", "timeout": "10"}))
    assert got["state"] == "failed" and got["timed_out"] is True
    page = await _ok(await client.get(BASE, params={"state": "timed_out",
                                                    "min_position": got["position"]}))
    assert [(w["workflow_id"], w["timed_out"]) for w in page["workflows"]] == [
        (late["workflow_id"], True)]
    failed = await _ok(await client.get(BASE, params={"state": "failed"}))
    assert {w["workflow_id"]: w["timed_out"] for w in failed["workflows"]} == {
        late["workflow_id"]: True, other["workflow_id"]: False}


async def test_run_timeout_fails_a_workflow_that_runs_too_long(api) -> None:
    client = await api()
    # Off by default: a running workflow has no deadline.
    free = await _ok(await client.post(BASE, json={}), 201)
    running = await _ok(await client.post(f"{BASE}/{free['workflow_id']}/start", json={}))
    assert (running["state"], running["deadline"], running["awaiting"]) == ("running", None, None)
    # Its own run_timeout: it times out while running, like a wait.
    wf = await _ok(await client.post(BASE, json={"run_timeout": 0.3}), 201)
    started = await _ok(await client.post(f"{BASE}/{wf['workflow_id']}/start", json={}))
    assert started["awaiting"] == "completion" and started["deadline"] is not None
    got = await _ok(await client.get(f"{BASE}/{wf['workflow_id']}",
                                     params={"wait_for": "failed", "timeout": "10"}))
    assert got["state"] == "failed" and got["timed_out"] is True
    assert "waiting for completion" in got["reason"]
    assert (await client.post(f"{BASE}/{wf['workflow_id']}/complete", json={})).status == 409
    page = await _ok(await client.get(BASE, params={"state": "timed_out",
                                                    "min_position": got["position"]}))
    assert [w["workflow_id"] for w in page["workflows"]] == [wf["workflow_id"]]
    still = await _ok(await client.get(f"{BASE}/{free['workflow_id']}"))
    assert still["state"] == "running"


async def test_chatlog_run_timeout_setting_bounds_every_run(api) -> None:
    client = await api(run_timeout=0.3)
    wf = await _ok(await client.post(BASE, json={}), 201)
    await _ok(await client.post(f"{BASE}/{wf['workflow_id']}/start", json={}))
    got = await _ok(await client.get(f"{BASE}/{wf['workflow_id']}",
                                     params={"wait_for": "failed", "timeout": "10"}))
    assert got["timed_out"] is True
