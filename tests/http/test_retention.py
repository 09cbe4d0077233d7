"""Deliberate deletion over HTTP: only a cursor inside deleted history is gone (410).

A request without a cursor (``/v1/events``, the SSE stream without an id, the
console's Live events) starts at the oldest event kept; a deleted cursor's
problem document names the oldest cursor still available; a server started
after a deletion starts quietly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from chatlog.eventstore import partition_of
from chatlog.eventstore.archive import Archive
from chatlog.http import STATE
from chatlog.identity import normalize_project_id
from tests.helpers import eventually
from tests.http.conftest import post_message, read_sse
from tests.sealing import archiver


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_after_a_deletion_no_cursor_starts_at_the_oldest_kept(client) -> None:
    posted = [await post_message(client, "P", f"m{i}") for i in range(5)]
    store = client.app[STATE].store
    assert await store.trim(0, posted[2]["position"]) == 2

    page = await (await client.get("/v1/events")).json()
    assert [e["position"] for e in page["events"]] == [m["position"] for m in posted[2:]]
    page = await (await client.get("/v1/events", params={"after": "0-0"})).json()
    assert len(page["events"]) == 3

    resp = await client.get("/v1/events/stream")
    assert resp.status == 200
    got = await read_sse(resp, 3)
    assert [d["position"] for _, d in got] == [m["position"] for m in posted[2:]]
    resp.close()

    doc = await _problem(
        await client.get("/v1/events", params={"after": posted[0]["position"]}), 410)
    assert doc["oldest_cursor"] == posted[1]["position"]
    assert posted[1]["position"] in doc["detail"]
    doc = await _problem(await client.get(
        "/v1/events/stream", headers={"Last-Event-ID": posted[0]["position"]}), 410)
    assert doc["oldest_cursor"] == posted[1]["position"]
    # The cursor it names works, and misses nothing kept.
    page = await (await client.get("/v1/events", params={"after": doc["oldest_cursor"]})).json()
    assert [e["position"] for e in page["events"]] == [m["position"] for m in posted[2:]]


async def test_a_deleted_multi_partition_cursor_names_a_whole_cursor(api) -> None:
    client = await api(partitions=2)
    names: dict[int, str] = {}
    for i in range(50):
        names.setdefault(partition_of(normalize_project_id(f"proj-{i}").key, 2), f"proj-{i}")
    posted = [await post_message(client, names[i % 2], f"m{i}") for i in range(6)]
    p0 = [m for m in posted if m["partition"] == 0]
    p1 = [m for m in posted if m["partition"] == 1]
    store = client.app[STATE].store
    await store.trim(0, p0[2]["position"])
    stale = f"{p0[0]['position']},{p1[0]['position']}"
    doc = await _problem(await client.get("/v1/events", params={"after": stale}), 410)
    assert doc["oldest_cursor"] == f"{p0[1]['position']},{p1[0]['position']}"
    page = await (await client.get("/v1/events", params={"after": doc["oldest_cursor"]})).json()
    assert sorted(e["position"] for e in page["events"]) == sorted(
        [p0[2]["position"], *(m["position"] for m in p1[1:])])
    everything = await (await client.get("/v1/events")).json()
    assert len(everything["events"]) == 4


async def test_a_server_started_after_a_deletion_starts_without_warnings(
        api, caplog: pytest.LogCaptureFixture) -> None:
    first = await api()
    posted = [await post_message(first, "P", f"m{i}") for i in range(4)]
    wf = await first.post("/v1/projects/P/workflows", json={"workflow_id": "wf-after"})
    assert wf.status == 201, await wf.text()
    await first.app[STATE].store.trim(0, posted[2]["position"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chatlog"):
        second = await api(data_dir=first.app[STATE].settings.data_dir.parent / "fresh")
        page = await (await second.get("/v1/events")).json()
    assert len(page["events"]) == 3
    warnings = [r for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("chatlog")]
    assert warnings == [], [r.getMessage() for r in warnings]


async def test_replay_and_sse_resume_from_the_archive_while_appends_continue(
        api, tmp_path) -> None:
    """A cursor in the archive, across the tier boundary, while appends continue and the
    server's own archiver (a hot window of 6 events, segments of 7, a pass every 50 ms)
    keeps moving events out of Redis: every event once, in order."""
    client = await api(hot_events=6, archive_segment_events=7, archive_interval=0.05)
    st = client.app[STATE]
    store = st.store
    store.archive = Archive.open(st.settings.archive_location)

    def archived() -> int:
        return Archive.open(st.settings.archive_location).count(0)

    # The archiver seals once the stream exceeds its window by a tenth (at least one
    # event), so after the last append up to 7 events may stay hot: 18 of 25 archived.
    posted = [await post_message(client, "P", f"m{i}", thread_id="t") for i in range(25)]
    await eventually(lambda: archived() >= 18, what="the server's archiver sealing m0..m17")

    async def more() -> None:
        for i in range(25, 45):
            posted.append(await post_message(client, "P", f"m{i}", thread_id="t"))

    appending = asyncio.create_task(more())

    def appended_beyond(n: int) -> Any:
        return lambda: appending.done() or len(posted) > n

    seen: list[str] = []
    after = "0-0"
    try:
        while len(seen) < 45:
            page = await (await client.get("/v1/events", params={"after": after,
                                                                 "limit": "4"})).json()
            seen += [e["data"]["content"] for e in page["events"]]
            after = page["cursor"]
            if not page["events"]:
                await eventually(appended_beyond(len(seen)), what="another append")
    finally:
        await appending
    assert seen == [f"m{i}" for i in range(45)]
    await eventually(lambda: archived() >= 38, what="the archiver sealing m18..m37")

    # An SSE client that stopped at event 3 (archived) resumes: the rest, once, in order.
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": posted[3]["position"]})
    assert resp.status == 200
    late = asyncio.create_task(post_message(client, "P", "m45", thread_id="t"))
    got = await read_sse(resp, 42)
    await late
    resp.close()
    assert [d["data"]["content"] for _, d in got] == [f"m{i}" for i in range(4, 46)]


async def test_a_deletion_across_tiers_over_http(client, tmp_path) -> None:
    store = client.app[STATE].store
    store.archive = Archive.open(str(tmp_path / "archive"))
    posted = [await post_message(client, "P", f"m{i}") for i in range(20)]
    await archiver(store, Archive.open(store.archive.url), hot=5, segment=6).run_pass()
    await store.trim(0, posted[8]["position"])  # inside the archive
    page = await (await client.get("/v1/events")).json()
    assert [e["position"] for e in page["events"]] == [m["position"] for m in posted[8:]]
    doc = await _problem(
        await client.get("/v1/events", params={"after": posted[2]["position"]}), 410)
    assert doc["oldest_cursor"] == posted[7]["position"]
