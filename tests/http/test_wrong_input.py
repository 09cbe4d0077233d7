"""Input that used to be accepted silently: unknown event types, a project never written."""

from __future__ import annotations

from chatlog.identity import normalize_project_id
from tests.http.conftest import post_message


async def test_an_unknown_event_type_is_a_400_listing_the_known_ones(client) -> None:
    for path in ("/v1/events", "/v1/events/stream"):
        resp = await client.get(path, params={"types": "message.appended,nonsense"})
        assert resp.status == 400, path
        assert resp.content_type == "application/problem+json"
        detail = (await resp.json())["detail"]
        assert "unknown event type 'nonsense'" in detail
        assert "message.appended" in detail.split("known types:")[1]
    assert (await client.get("/v1/events", params={"types": "message.appended"})).status == 200


async def test_threads_of_a_project_never_written_is_a_404_naming_its_key(client) -> None:
    await post_message(client, "Blog-Project", "hello")
    resp = await client.get("/v1/projects/blog-projekt/threads")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    doc = await resp.json()
    key = str(normalize_project_id("blog-projekt").key)
    assert doc["project"] == key and key in doc["detail"]
    assert "'blog-projekt'" in doc["detail"]
    # The real project, in any spelling, answers; so does one with only workflows.
    assert (await client.get("/v1/projects/BLOG-PROJECT/threads")).status == 200
    created = await (await client.post("/v1/projects/Flows-Only/workflows", json={})).json()
    resp = await client.get("/v1/projects/flows-only/threads",
                            params={"min_position": created["position"]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["threads"] == []
