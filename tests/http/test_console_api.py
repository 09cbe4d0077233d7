"""What the console needs from the API: project overview, workflow search and counts."""

from __future__ import annotations

from typing import Any

from chatlog.http import STATE
from tests.helpers import eventually
from tests.http.conftest import bearer, post_message


async def create(client: Any, project: str, name: str, **more: Any) -> str:
    resp = await client.post(f"/v1/projects/{project}/workflows", json={"name": name, **more})
    assert resp.status == 201, await resp.text()
    doc = await resp.json()
    return str(doc.get("workflow_id") or doc["id"])


async def caught_up(client: Any) -> None:
    projector = client.server.app[STATE].services.projector

    async def check() -> bool:
        return bool((await projector.lag()).caught_up)

    await eventually(check, timeout=10, what="the projector to catch up")


async def test_projects_have_thread_and_workflow_counts_and_last_activity(api, tokens_file) -> None:
    client = await api(tokens_file=tokens_file)
    admin = bearer("admin")
    await post_message(client, "Blog-Project", "hello", headers=admin)
    await post_message(client, "Blog-Project", "again", headers=admin)
    for name in ("a", "b"):
        resp = await client.post("/v1/projects/Blog-Project/workflows", json={"name": name},
                                 headers=admin)
        assert resp.status == 201
    # A project with workflows only is listed too.
    resp = await client.post("/v1/projects/Shop/workflows", json={"name": "s"}, headers=admin)
    assert resp.status == 201
    await caught_up(client)
    doc = await (await client.get("/v1/projects", headers=admin)).json()
    by_name = {p["name"]: p for p in doc["projects"]}
    blog, shop = by_name["Blog-Project"], by_name["Shop"]
    assert (blog["thread_count"], blog["message_count"], blog["workflow_count"]) == (2, 2, 2)
    assert blog["last_activity_at"] >= blog["updated_at"]
    assert (shop["thread_count"], shop["workflow_count"]) == (0, 1)
    # A scoped token sees its own projects only.
    doc = await (await client.get("/v1/projects", headers=bearer("blog"))).json()
    assert [p["name"] for p in doc["projects"]] == ["Blog-Project"]


async def test_workflows_search_by_name_and_id_with_counts_per_state(client) -> None:
    ids = [await create(client, "Ops", f"deploy-{i}", workflow_id=f"wf-deploy-{i}")
           for i in range(3)]
    other = await create(client, "Ops", "backup_50%", workflow_id="wf-backup")
    started = await client.post(f"/v1/projects/Ops/workflows/{ids[0]}/start", json={})
    assert started.status == 200
    await caught_up(client)

    async def listing(**params: str) -> Any:
        resp = await client.get("/v1/projects/Ops/workflows", params=params)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    everything = await listing()
    assert everything["counts"] == {"waiting_for_start": 3, "running": 1}
    named = await listing(name="DEPLOY")
    assert sorted(w["workflow_id"] for w in named["workflows"]) == sorted(ids)
    assert named["counts"] == {"waiting_for_start": 2, "running": 1}
    # LIKE wildcards in the search are literal characters.
    assert [w["workflow_id"] for w in (await listing(name="50%"))["workflows"]] == [other]
    assert (await listing(name="_"))["workflows"][0]["workflow_id"] == other
    found = await listing(workflow_id="wf-deploy-1")
    assert [w["workflow_id"] for w in found["workflows"]] == ["wf-deploy-1"]
    running = await listing(state="running", name="deploy")
    assert [w["workflow_id"] for w in running["workflows"]] == [ids[0]]
