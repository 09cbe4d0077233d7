"""Replay pages bounded by bytes as well as count (issue 15 #3), and scoped replays
that reveal nothing about projects the token cannot read (issue 15 #6)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import bearer, post_message


async def _page(client, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/events", params={k: str(v) for k, v in params.items()},
                            headers=headers)
    assert resp.status == 200, await resp.text()
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_replay_pages_are_bounded_by_bytes_and_say_has_more(api) -> None:
    client = await api(replay_page_bytes=256 * 1024)
    sent = [(await post_message(client, "Big", f"{i}" + "x" * 100_000))["message_id"]
            for i in range(6)]
    await post_message(client, "Small", "tiny")
    first = await _page(client, project="Big", limit=1000)
    assert 1 <= len(first["events"]) <= 2, len(first["events"])  # 256 KiB of 100 KB events
    assert first["has_more"] is True
    got = [e["id"] for e in first["events"]]
    page = first
    while page["has_more"]:
        page = await _page(client, project="Big", limit=1000, after=page["cursor"])
        assert len(page["events"]) <= 2
        got += [e["id"] for e in page["events"]]
    assert got == sent
    # One event bigger than the bound still comes, alone: a page always makes progress.
    tight = await _page(client, project="Big", limit=1000)
    assert tight["events"]
    small = await _page(client, project="Small", limit=1000)
    assert [e["data"]["content"] for e in small["events"]] == ["tiny"]


@pytest.mark.parametrize("partitions", [1, 4])
async def test_a_scoped_replay_is_the_same_whether_or_not_others_wrote(
    api, tokens_file, partitions: int
) -> None:
    client = await api(tokens_file=tokens_file, partitions=partitions)
    reader = bearer("reader")  # may read Blog-Project only
    for i in range(2):
        await post_message(client, "Blog-Project", f"blog {i}", headers=bearer("blog"))
    views = {
        "filtered": {"project": "Blog-Project"},
        "by scope": {},
        "newest first": {"before": "end"},
    }
    before = {name: await _page(client, reader, **params) for name, params in views.items()}
    forward = [name for name in views if "before" not in views[name]]
    tails = {name: await _page(client, reader, after=before[name]["cursor"], **views[name])
             for name in forward}
    for i in range(3):
        await post_message(client, "Shop", f"shop {i}", headers=bearer("shop"))
    after = {name: await _page(client, reader, **params) for name, params in views.items()}
    for name in views:
        assert after[name] == before[name], name  # events, cursors, has_more
    for name in forward:
        again = await _page(client, reader, after=before[name]["cursor"], **views[name])
        assert again == tails[name], name
        assert again["events"] == []
    # The admin, who may read everything, does move past the shop's events.
    admin = await _page(client, bearer("admin"), after=before["filtered"]["cursor"])
    assert [e["data"]["content"] for e in admin["events"]] == [f"shop {i}" for i in range(3)]
