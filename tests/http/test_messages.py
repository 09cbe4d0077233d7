"""Appending messages over HTTP: the seed's manual tests 2, 3 and 4, idempotency, conflicts."""

from __future__ import annotations

import uuid

import pytest

from tests.http.conftest import post_message


async def test_seed_test2_project_is_case_insensitive(client) -> None:
    first = await post_message(client, "Blog-Project", "from Blog-Project")
    again = await post_message(
        client, "blog-project", "from blog-project", thread_id=first["thread_id"]
    )
    assert again["project"] == first["project"]
    assert again["thread_id"] == first["thread_id"]
    assert again["version"] == 2
    # Read back with the lowercase and the padded upper-case spellings.
    for spelling in ("blog-project", "%20BLOG-PROJECT%20"):
        resp = await client.get(
            f"/v1/projects/{spelling}/threads/{first['thread_id']}/messages",
            params={"min_position": again["position"]},
        )
        assert resp.status == 200, await resp.text()
        contents = [m["content"] for m in (await resp.json())["messages"]]
        assert contents == ["from Blog-Project", "from blog-project"]


@pytest.mark.parametrize("spelling", [None, "null", "None", "undefined", ""])
async def test_seed_test3_null_thread_ids_start_a_thread(client, spelling) -> None:
    first = await post_message(client, "Blog-Project", "one", thread_id=spelling)
    assert first["thread_id"].startswith("thread-")
    uuid.UUID(first["thread_id"].removeprefix("thread-"))
    uuid.UUID(first["message_id"])
    second = await post_message(client, "Blog-Project", "two", thread_id=first["thread_id"])
    assert second["thread_id"] == first["thread_id"]
    resp = await client.get(
        f"/v1/projects/Blog-Project/threads/{first['thread_id']}/messages",
        params={"min_position": second["position"]},
    )
    messages = (await resp.json())["messages"]
    assert [(m["content"], m["version"]) for m in messages] == [("one", 1), ("two", 2)]
    assert [m["message_id"] for m in messages] == [first["message_id"], second["message_id"]]


async def test_seed_test3_conversation_list_after_refresh(api) -> None:
    client = await api()
    msg = await post_message(client, "Blog-Project", "remember me")
    # "Refresh": a new client, a fresh request, read-your-writes by position.
    other = await api(services=True)
    resp = await other.get(
        "/v1/projects/blog-project/threads", params={"min_position": msg["position"]}
    )
    assert resp.status == 200
    threads = (await resp.json())["threads"]
    assert [t["thread_id"] for t in threads] == [msg["thread_id"]]
    assert threads[0]["last_preview"] == "remember me"


async def test_seed_test4_old_conversations_stay_retrievable(api) -> None:
    first = await api()
    old = [await post_message(first, "Legacy", f"old {i}") for i in range(3)]
    await first.close()
    # A new app over the same log (a restart): everything is still there.
    later = await api()
    newest = await post_message(later, "legacy", "new")
    resp = await later.get("/v1/projects/LEGACY/threads",
                           params={"min_position": newest["position"]})
    listed = [t["thread_id"] for t in (await resp.json())["threads"]]
    assert listed[0] == newest["thread_id"]
    assert set(listed) == {m["thread_id"] for m in [*old, newest]}
    for m in old:
        resp = await later.get(f"/v1/projects/Legacy/threads/{m['thread_id']}/messages")
        assert resp.status == 200
        assert (await resp.json())["messages"][0]["message_id"] == m["message_id"]


async def test_threads_are_newest_first_and_paginate(client) -> None:
    posted = [await post_message(client, "Paging", f"m{i}") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "min_position": posted[-1]["position"]}
        if cursor:
            params["cursor"] = cursor
        page = await (await client.get("/v1/projects/Paging/threads", params=params)).json()
        seen += [t["thread_id"] for t in page["threads"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [m["thread_id"] for m in reversed(posted)]


async def test_messages_after_version_and_limit(client) -> None:
    first = await post_message(client, "P", "v1")
    last = first
    for i in range(2, 6):
        last = await post_message(client, "P", f"v{i}", thread_id=first["thread_id"])
    resp = await client.get(
        f"/v1/projects/P/threads/{first['thread_id']}/messages",
        params={"after_version": "2", "limit": "2", "min_position": last["position"]},
    )
    page = await resp.json()
    assert [m["content"] for m in page["messages"]] == ["v3", "v4"]
    assert page["next_after_version"] == 4


async def test_retry_with_event_id_returns_the_original_and_appends_nothing(client) -> None:
    event_id = str(uuid.uuid4())
    first = await post_message(client, "Blog-Project", "once", event_id=event_id)
    resp = await client.post(
        "/v1/projects/Blog-Project/messages",
        json={"thread_id": None, "role": "user", "content": "once", "event_id": event_id},
    )
    assert resp.status == 200
    retry = await resp.json()
    assert retry["duplicate"] is True
    for name in ("message_id", "thread_id", "position", "version", "project"):
        assert retry[name] == first[name]
    events = await (await client.get("/v1/events", params={"project": "Blog-Project"})).json()
    assert [e["id"] for e in events["events"]] == [event_id]


async def test_event_id_of_another_project_is_another_event(client) -> None:
    # Team decision 4: an event id's identity is (project, event_id).
    event_id = str(uuid.uuid4())
    first = await post_message(client, "A", "mine", event_id=event_id)
    resp = await client.post(
        "/v1/projects/B/messages", json={"role": "user", "content": "x", "event_id": event_id}
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["project"] != first["project"]


async def test_expected_version_conflict_names_the_current_version(client) -> None:
    first = await post_message(client, "P", "one", expected_version=0)
    resp = await client.post("/v1/projects/P/messages", json={
        "thread_id": first["thread_id"], "role": "user", "content": "late", "expected_version": 0,
    })
    assert resp.status == 409
    doc = await resp.json()
    assert resp.content_type == "application/problem+json"
    assert doc["current_version"] == 1 and doc["expected_version"] == 0
    assert "current version is 1" in doc["detail"]
    ok = await post_message(client, "P", "two", thread_id=first["thread_id"], expected_version=1)
    assert ok["version"] == 2


async def test_appended_event_is_a_valid_message_appended(client) -> None:
    from chatlog.events import MessageAppended

    posted = await post_message(client, "P", "typed", metadata={"k": [1, {"x": None}]})
    page = await (await client.get("/v1/events", params={"project": "P"})).json()
    event = page["events"][0]
    assert event["type"] == "message.appended" and event["id"] == posted["message_id"]
    data = MessageAppended.model_validate(event["data"])
    assert data.thread_id == posted["thread_id"] and data.metadata == {"k": [1, {"x": None}]}
