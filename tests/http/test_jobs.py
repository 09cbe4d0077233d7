"""Jobs over HTTP: enqueue, inspect, list by state (dead letters too), scoped by token."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from chatlog.http._state import STATE
from chatlog.http.app import endpoints
from chatlog.orchestrator import Job, Worker
from chatlog.orchestrator.job_records import JobView
from tests.helpers import eventually
from tests.http.conftest import bearer

BASE = "/v1/projects/Blog-Project/jobs"


async def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _handler(job: Job) -> dict[str, Any]:
    if job.kind == "fail":
        raise RuntimeError("always fails")
    return {"echo": job.payload}


@contextlib.asynccontextmanager
async def _worker(client: Any) -> Any:
    app_state = client.server.app[STATE]
    settings = app_state.settings.model_copy(update={"job_lease": 2.0})
    w = Worker(app_state.store, settings, _handler, name="test-worker")
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        await w.stop()
        await task


async def test_enqueue_run_and_inspect(client) -> None:
    job = await _ok(await client.post(BASE, json={"kind": "echo", "payload": {"n": 1}}), 201)
    JobView.model_validate(job)
    assert set(job) == {"job_id", "project", "kind", "workflow_id", "state", "attempts",
                        "max_deliveries", "last_error", "enqueued_at", "updated_at", "payload"}
    assert job["state"] == "pending" and job["attempts"] == 0 and job["payload"] == {"n": 1}
    # Without workflow_id it got a workflow of its own, started, with the job in its history.
    wf = await _ok(await client.get(f"/v1/projects/Blog-Project/workflows/{job['workflow_id']}"))
    assert wf["state"] == "running"
    assert [h["type"] for h in wf["history"]][-1] == "job.enqueued"
    async with _worker(client):
        async def done() -> bool:
            got = await _ok(await client.get(f"{BASE}/{job['job_id']}"))
            return got["state"] == "done"
        await eventually(done, timeout=20, what="the job done")
    got = await _ok(await client.get(f"{BASE}/{job['job_id']}"))
    assert got["attempts"] == 1 and got["last_error"] is None
    page = await _ok(await client.get(BASE, params={"state": "done"}))
    assert [j["job_id"] for j in page["jobs"]] == [job["job_id"]]
    assert (await _ok(await client.get(BASE, params={"state": "pending"})))["jobs"] == []


async def test_failing_job_is_listed_as_dead(client) -> None:
    wf = await _ok(await client.post("/v1/projects/Blog-Project/workflows",
                                     json={"workflow_id": "wf-dead"}), 201)
    job = await _ok(await client.post(BASE, json={
        "kind": "fail", "workflow_id": wf["workflow_id"], "job_id": "job-fails", "max_deliveries": 2,
    }), 201)
    assert job["job_id"] == "job-fails" and job["max_deliveries"] == 2
    async with _worker(client):
        async def dead() -> Any:
            page = await _ok(await client.get(BASE, params={"state": "dead"}))
            return page["jobs"]
        jobs = await eventually(dead, timeout=30, what="the job dead-lettered")
    assert [j["job_id"] for j in jobs] == ["job-fails"]
    assert jobs[0]["attempts"] == 2 and "always fails" in jobs[0]["last_error"]


async def test_job_id_is_idempotent_and_a_reuse_is_409(client) -> None:
    body = {"kind": "echo", "payload": {"a": 1}, "job_id": "job-same"}
    first = await _ok(await client.post(BASE, json=body), 201)
    again = await _ok(await client.post(BASE, json=body), 200)
    assert again["job_id"] == first["job_id"] and again["workflow_id"] == first["workflow_id"]
    resp = await client.post(BASE, json={**body, "payload": {"a": 2}})
    assert resp.status == 409 and resp.content_type == "application/problem+json"
    page = await _ok(await client.get(BASE))
    assert [j["job_id"] for j in page["jobs"]] == ["job-same"]


async def test_pages_newest_first(client) -> None:
    ids = []
    for i in range(5):
        ids.append((await _ok(await client.post(BASE, json={"kind": "echo", "job_id": f"j{i}"}),
                                201))["job_id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await _ok(await client.get(BASE, params=params))
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_bad_input_is_problem_json(client) -> None:
    for resp in (
        await client.post(BASE, json={}),
        await client.post(BASE, json={"kind": "echo", "payload": [1]}),
        await client.post(BASE, json={"kind": "echo", "max_deliveries": 0}),
        await client.post(BASE, json={"kind": "echo", "job_id": "a/b"}),
        # path segments a URL cannot name: GET .../jobs/. was the list, .. only %2e%2e
        await client.post(BASE, json={"kind": "echo", "job_id": "."}),
        await client.post(BASE, json={"kind": "echo", "job_id": ".."}),
        await client.get(BASE, params={"state": "sleeping"}),
        await client.get(BASE, params={"cursor": "nope"}),
    ):
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/problem+json"
    missing = await client.post(BASE, json={"kind": "echo", "workflow_id": "wf-none"})
    assert missing.status == 404
    assert (await client.get(f"{BASE}/job-none")).status == 404
    ended = await _ok(await client.post("/v1/projects/Blog-Project/workflows", json={}), 201)
    await _ok(await client.post(
        f"/v1/projects/Blog-Project/workflows/{ended['workflow_id']}/cancel", json={}))
    resp = await client.post(BASE, json={"kind": "echo", "workflow_id": ended["workflow_id"]})
    assert resp.status == 409 and resp.content_type == "application/problem+json"


async def test_jobs_are_scoped_to_their_project(api, tokens_file) -> None:
    client = await api(tokens_file=tokens_file)
    job = await _ok(await client.post(BASE, json={"kind": "echo"}, headers=bearer("blog")), 201)
    shop = bearer("shop")
    assert (await client.post(BASE, json={"kind": "echo"}, headers=shop)).status == 403
    assert (await client.get(BASE, headers=shop)).status == 403
    assert (await client.get(f"{BASE}/{job['job_id']}", headers=shop)).status == 403
    # Another project never sees it, even by id.
    assert (await client.get(f"/v1/projects/Shop/jobs/{job['job_id']}", headers=shop)).status == 404
    assert (await _ok(await client.get("/v1/projects/Shop/jobs", headers=shop)))["jobs"] == []
    reader = bearer("reader")
    assert (await client.post(BASE, json={"kind": "echo"}, headers=reader)).status == 403
    assert (await _ok(await client.get(BASE, headers=reader)))["jobs"][0]["job_id"] == job["job_id"]
    assert (await client.get(BASE)).status == 401


async def test_a_job_id_is_per_project(api, tokens_file) -> None:
    """The same job_id in two projects is two jobs (as event ids are per project).

    It used to be one record per partition: the second project's enqueue
    appended ``job.enqueued`` to its new workflow, found the id taken, pushed
    nothing and answered 404 "enqueued but its record is gone" -- a job that
    never runs, and an oracle for another project's job ids.
    """
    client = await api(tokens_file=tokens_file)
    body = {"kind": "echo", "job_id": "job-shared"}
    shop = await _ok(await client.post("/v1/projects/Shop/jobs", json={**body, "payload": {"s": 1}},
                                       headers=bearer("shop")), 201)
    blog = await _ok(await client.post(BASE, json=body, headers=bearer("blog")), 201)
    assert blog["job_id"] == shop["job_id"] == "job-shared"
    assert blog["project"] != shop["project"] and blog["payload"] == {}
    again = await _ok(await client.get(f"{BASE}/job-shared", headers=bearer("blog")))
    assert again["workflow_id"] == blog["workflow_id"]
    theirs = await _ok(await client.get("/v1/projects/Shop/jobs/job-shared", headers=bearer("shop")))
    assert theirs["payload"] == {"s": 1} and theirs["workflow_id"] == shop["workflow_id"]
    # Both run, each as its own project's job.
    async with _worker(client):
        async def both_done() -> bool:
            a = await _ok(await client.get(f"{BASE}/job-shared", headers=bearer("blog")))
            b = await _ok(await client.get("/v1/projects/Shop/jobs/job-shared",
                                           headers=bearer("shop")))
            return a["state"] == b["state"] == "done"
        await eventually(both_done, timeout=20, what="both projects' jobs done")


async def test_a_rejected_job_leaves_no_workflow_behind(client) -> None:
    """A 400 for the job itself comes before its own workflow is created and started.

    It used to create and start ``job:<kind>`` first: every bad job_id left a
    running workflow with no job.
    """
    for body in ({"kind": "echo", "job_id": "a\u0000b"}, {"kind": "echo", "job_id": " padded"},
                 {"kind": "ec\u0000ho"}):
        resp = await client.post(BASE, json=body)
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/problem+json"
    marker = await _ok(await client.post("/v1/projects/Blog-Project/workflows",
                                         json={"name": "marker"}), 201)
    page = await _ok(await client.get("/v1/projects/Blog-Project/workflows",
                                      params={"min_position": marker["position"]}))
    assert [w["name"] for w in page["workflows"]] == ["marker"]


async def test_openapi_documents_the_jobs_endpoints(client) -> None:
    doc = await _ok(await client.get("/openapi.json"))
    paths = doc["paths"]
    assert set(paths["/v1/projects/{project}/jobs"]) >= {"post", "get"}
    assert "get" in paths["/v1/projects/{project}/jobs/{job_id}"]
    assert {e.operation_id for e in endpoints()} >= {"enqueue_job", "get_job", "list_project_jobs"}
