"""Reading the log backwards: ``GET /v1/events?before=CURSOR`` (newest first)."""

from __future__ import annotations

from typing import Any

from chatlog.eventstore.codec import parse_position
from tests.http.conftest import bearer, post_message


async def page(client: Any, status: int = 200, headers: Any = None, **params: str) -> Any:
    resp = await client.get("/v1/events", params=params, headers=headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def walk_back(client: Any, limit: int, **params: str) -> list[str]:
    """Every event id, newest first, paging with ``before`` until has_more is false."""
    seen: list[str] = []
    before = "end"
    for _ in range(100):
        got = await page(client, before=before, limit=str(limit), **params)
        seen += [e["id"] for e in got["events"]]
        before = got["cursor"]
        if not got["has_more"]:
            return seen
    raise AssertionError("no end")


async def test_backward_pages_are_the_forward_log_reversed(client) -> None:
    sent = [await post_message(client, "A" if i % 3 else "B", f"m{i}") for i in range(11)]
    ids = [s["message_id"] for s in sent]
    newest = await page(client, before="end", limit="4")
    assert [e["data"]["content"] for e in newest["events"]] == ["m10", "m9", "m8", "m7"]
    assert newest["has_more"] is True
    assert newest["newer_cursor"] == sent[-1]["position"]
    for limit in (1, 3, 4, 11, 50):
        assert await walk_back(client, limit) == ids[::-1]
    # Filters apply as they do forwards.
    assert await walk_back(client, 2, project="b") == [s["message_id"] for s in sent[::3]][::-1]
    assert await walk_back(client, 2, types="workflow.created") == []
    # Each event's cursor continues backwards right after it.
    second = newest["events"][1]
    older = await page(client, before=second["cursor"], limit="2")
    assert [e["data"]["content"] for e in older["events"]] == ["m8", "m7"]


async def test_newer_cursor_reads_exactly_what_came_after_the_page(client) -> None:
    for i in range(5):
        await post_message(client, "A", f"m{i}")
    top = await page(client, before="end", limit="2")
    later = await post_message(client, "A", "later")
    after = await page(client, after=top["newer_cursor"])
    assert [e["id"] for e in after["events"]] == [later["message_id"]]
    # From an older page, newer_cursor reads forwards from just above that page.
    old = await page(client, before=top["cursor"], limit="2")
    assert [e["data"]["content"] for e in old["events"]] == ["m2", "m1"]
    up = await page(client, after=old["newer_cursor"], limit="2")
    assert [e["data"]["content"] for e in up["events"]] == ["m3", "m4"]


async def test_backward_merges_partitions_newest_first(api) -> None:
    client = await api(partitions=3)
    sent = [await post_message(client, f"P{i % 5}", f"m{i}") for i in range(15)]
    got = await walk_back(client, 4)
    ids = [s["message_id"] for s in sent]
    assert sorted(got) == sorted(ids) and len(got) == len(ids)
    sent_by_id = {s["message_id"]: s for s in sent}
    # Newest first by position across partitions; two partitions' appends in the same
    # millisecond may tie (no order between them), within a partition the order is exact.
    keys = [parse_position(sent_by_id[i]["position"]) for i in got]
    assert keys == sorted(keys, reverse=True)
    for p in range(3):
        assert ([i for i in got if sent_by_id[i]["partition"] == p]
                == [i for i in ids[::-1] if sent_by_id[i]["partition"] == p])
    top = await page(client, before="end", limit="1")
    assert len(top["cursor"].split(",")) == 3


async def test_backward_keeps_token_isolation(api, tokens_file) -> None:
    client = await api(tokens_file=tokens_file)
    admin = bearer("admin")
    mine = [await post_message(client, "Blog-Project", f"b{i}", headers=admin) for i in range(3)]
    await post_message(client, "Shop", "secret", headers=admin)
    got = await page(client, before="end", headers=bearer("blog"))
    assert [e["id"] for e in got["events"]] == [m["message_id"] for m in mine][::-1]
    await page(client, 403, headers=bearer("blog"), before="end", project="Shop")
    await page(client, 401, before="end")


async def test_bad_before_is_a_problem(client) -> None:
    await post_message(client, "A", "x")
    for bad in ("start", "1-x", "-1"):
        doc = await page(client, 400, before=bad)
        assert doc["status"] == 400
    doc = await page(client, 400, before="end", after="0")
    assert "not both" in doc["detail"]


async def test_backward_ends_at_the_oldest_event_kept(client) -> None:
    from chatlog.http import STATE

    sent = [await post_message(client, "A", f"m{i}") for i in range(6)]
    store = client.server.app[STATE].store
    await store.trim(0, sent[3]["position"])
    got = await walk_back(client, 2)
    assert got == [s["message_id"] for s in sent[3:]][::-1]
    # A cursor from before the trim answers what is left, not 410.
    older = await page(client, before=sent[4]["position"])
    assert [e["id"] for e in older["events"]] == [sent[3]["message_id"]]
