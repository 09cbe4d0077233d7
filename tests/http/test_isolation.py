"""A token for one project never sees another's data, through any read endpoint."""

from __future__ import annotations

import asyncio

import pytest

from tests.http.conftest import bearer, post_message, read_sse

SHOP, BLOG = bearer("shop"), bearer("blog")


@pytest.fixture
async def world(api, tokens_file):
    client = await api(tokens_file=tokens_file)
    admin = bearer("admin")
    blog = await post_message(client, "Blog-Project", "blog secret", headers=admin)
    shop = await post_message(client, "Shop", "shop note", headers=admin)
    resp = await client.post("/v1/projects/Blog-Project/workflows", json={"name": "w"},
                             headers=admin)
    wf = await resp.json()
    # Wait until the read models have both projects.
    resp = await client.get("/v1/projects/shop/threads", headers=SHOP,
                            params={"min_position": shop["position"]})
    assert resp.status == 200
    return client, blog, shop, wf


async def test_direct_reads_of_a_foreign_project_are_403(world) -> None:
    client, blog, _, wf = world
    for path in (
        "/v1/projects/blog-project/threads",
        "/v1/projects/blog-project/workflows",
        f"/v1/projects/Blog-Project/threads/{blog['thread_id']}/messages",
        f"/v1/projects/Blog-Project/workflows/{wf['workflow_id']}",
        f"/v1/projects/{blog['project']}/threads",  # by UUID too
        "/v1/events?project=BLOG-PROJECT",
        "/v1/events/stream?project=Blog-Project",
    ):
        resp = await client.get(path, headers=SHOP)
        assert resp.status == 403, path
        assert resp.content_type == "application/problem+json"
    # Naming a foreign thread or workflow under one's own project finds nothing.
    for path in (f"/v1/projects/Shop/threads/{blog['thread_id']}/messages",
                 f"/v1/projects/Shop/workflows/{wf['workflow_id']}"):
        assert (await client.get(path, headers=SHOP)).status == 404, path
    resp = await client.post(f"/v1/projects/Blog-Project/workflows/{wf['workflow_id']}/cancel",
                             json={}, headers=SHOP)
    assert resp.status == 403


async def test_lists_and_replay_show_only_the_tokens_projects(world) -> None:
    client, blog, shop, wf = world
    projects = await (await client.get("/v1/projects", headers=SHOP)).json()
    assert [p["name"] for p in projects["projects"]] == ["Shop"]
    everything = await (await client.get("/v1/projects", headers=bearer("admin"))).json()
    assert {p["name"] for p in everything["projects"]} == {"Blog-Project", "Shop"}

    for params in ({}, {"thread_id": blog["thread_id"]}, {"workflow_id": wf["workflow_id"]},
                   {"types": "message.appended,workflow.created"}):
        page = await (await client.get("/v1/events", params=params, headers=SHOP)).json()
        assert {e["project"] for e in page["events"]} <= {shop["project"]}, params
        assert blog["message_id"] not in {e["id"] for e in page["events"]}

    # SSE without a project filter: only the token's project, catch-up and live.
    resp = await client.get("/v1/events/stream", headers=SHOP)
    got = await read_sse(resp, 1)
    assert got[0][1]["id"] == shop["message_id"]
    admin = bearer("admin")
    await post_message(client, "Blog-Project", "blog live", headers=admin)
    later = await post_message(client, "Shop", "shop live", headers=admin)
    got = await read_sse(resp, 1)
    assert got[0][1]["id"] == later["message_id"]
    resp.close()

    # EventSource cannot send headers: the token may come as access_token.
    resp = await client.get("/v1/events/stream", params={"access_token": "shop-token-00001",
                                                          "thread_id": blog["thread_id"]})
    assert resp.status == 200
    with pytest.raises(TimeoutError):
        await read_sse(resp, 1, timeout=0.5)
    resp.close()
    await asyncio.sleep(0)


async def test_a_token_without_scopes_sees_nothing(api, tmp_path) -> None:
    import json

    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"token": "nobody-token-01"}, {"token": "admin-token-0001", "admin": True}]}))
    client = await api(tokens_file=path)
    await post_message(client, "P", "x", headers={"Authorization": "Bearer admin-token-0001"})
    none = {"Authorization": "Bearer nobody-token-01"}
    assert (await (await client.get("/v1/events", headers=none)).json())["events"] == []
    assert (await (await client.get("/v1/projects", headers=none)).json())["projects"] == []
    assert (await client.get("/v1/projects/P/threads", headers=none)).status == 403


async def test_open_access_answers_loopback_only() -> None:
    from aiohttp.test_utils import make_mocked_request

    from chatlog.errors import Unauthorized
    from chatlog.http import TokenRegistry

    registry = TokenRegistry(None)

    class Transport:
        def __init__(self, peer: str) -> None:
            self.peer = peer

        def get_extra_info(self, name: str, default: object = None) -> object:
            return (self.peer, 1234) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    local = make_mocked_request("GET", "/v1/events", transport=Transport("127.0.0.1"))
    assert registry.authenticate(local).admin
    remote = make_mocked_request("GET", "/v1/events", transport=Transport("10.1.2.3"))
    with pytest.raises(Unauthorized, match="loopback"):
        registry.authenticate(remote)
