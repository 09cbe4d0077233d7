"""Replay and Server-Sent Events: filters, exact resume, keep-alive, slow subscribers."""

from __future__ import annotations

import asyncio
import json

from chatlog.http import STATE
from tests.helpers import eventually
from tests.http.conftest import post_message, read_sse


async def test_replay_filters_and_pages(client) -> None:
    a1 = await post_message(client, "A", "a1")
    b1 = await post_message(client, "B", "b1")
    a2 = await post_message(client, "a", "a2", thread_id=a1["thread_id"])
    wf = await client.post("/v1/projects/A/workflows", json={"name": "w"})
    assert wf.status == 201
    wid = (await wf.json())["workflow_id"]

    async def ids(**params: str) -> list[str]:
        page = await (await client.get("/v1/events", params=params)).json()
        return [e["aggregate_id"] + ":" + e["type"] for e in page["events"]]

    assert len(await ids()) == 4
    assert await ids(project="b") == [f"{b1['thread_id']}:message.appended"]
    assert await ids(thread_id=a1["thread_id"]) == [f"{a1['thread_id']}:message.appended"] * 2
    assert await ids(workflow_id=wid) == [f"{wid}:workflow.created"]
    assert await ids(types="workflow.created,job.started") == [f"{wid}:workflow.created"]
    assert await ids(after=a2["position"]) == [f"{wid}:workflow.created"]
    # Pages: limit and cursor walk the log exactly once.
    seen, after = [], "0"
    while True:
        page = await (await client.get("/v1/events", params={"after": after, "limit": "1"})).json()
        seen += [e["id"] for e in page["events"]]
        after = page["cursor"]
        if not page["has_more"]:
            break
    assert seen[:3] == [a1["message_id"], b1["message_id"], a2["message_id"]]
    assert len(seen) == 4
    # Each event's cursor resumes right after it.
    page = await (await client.get("/v1/events", params={"project": "A"})).json()
    assert page["events"][0]["cursor"] == a1["position"]


async def test_sse_resume_with_last_event_id_gets_exactly_the_missed_events(client) -> None:
    before = [await post_message(client, "Live", f"m{i}") for i in range(3)]
    resp = await client.get("/v1/events/stream", params={"project": "live"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    got = await read_sse(resp, 3)
    assert [d["data"]["content"] for _, d in got] == ["m0", "m1", "m2"]
    live = await post_message(client, "Live", "m3")
    got += await read_sse(resp, 1)
    assert got[-1][1]["id"] == live["message_id"]
    assert got[-1][0] == live["position"]  # with one partition the id is the position
    last_id = got[-1][0]
    resp.close()  # the browser's connection drops

    missed = [await post_message(client, "Live", f"m{i}") for i in range(4, 8)]
    await post_message(client, "Other", "not mine")
    resp = await client.get("/v1/events/stream", params={"project": "Live"},
                            headers={"Last-Event-ID": last_id})
    again = await read_sse(resp, 4)
    assert [d["id"] for _, d in again] == [m["message_id"] for m in missed]
    assert [i for i, _ in again] == [m["position"] for m in missed]
    # Nothing twice, nothing more: the next event is a new one.
    newest = await post_message(client, "Live", "m8")
    nxt = await read_sse(resp, 1)
    assert nxt[0][1]["id"] == newest["message_id"]
    resp.close()
    earlier = {m["message_id"] for m in before} | {live["message_id"]}
    assert earlier.isdisjoint({d["id"] for _, d in again})


async def test_sse_after_query_parameter_and_keepalive(api) -> None:
    client = await api(sse_keepalive=0.2)
    first = await post_message(client, "K", "one")
    second = await post_message(client, "K", "two")
    resp = await client.get("/v1/events/stream", params={"after": first["position"]})
    got = await read_sse(resp, 1)
    assert got[0][1]["id"] == second["message_id"]
    lines = []
    async with asyncio.timeout(5):
        while b": keep-alive\n" not in lines:
            lines.append(await resp.content.readline())
    resp.close()


async def test_a_slow_subscriber_is_dropped_without_slowing_the_others(store) -> None:
    from chatlog.http.fanout import Fanout
    from tests.helpers import message

    cutoffs = []
    fanout = Fanout(store, buffer=5, on_cutoff=lambda: cutoffs.append(1), block=0.05)
    slow, fast = await fanout.subscribe(), await fanout.subscribe()
    received = []
    for i in range(10):
        await store.append_one(message("Fan", content=f"m{i}"))
        async with asyncio.timeout(5):
            await fast.wakeup.wait()
        received += fast.drain()  # the fast one keeps up; the slow one never reads
    assert [e.data["content"] for e in received] == [f"m{i}" for i in range(10)]
    assert slow.overflowed and not fast.overflowed
    assert cutoffs == [1] and len(fanout) == 1
    await fanout.stop()


async def test_the_shared_tail_runs_only_while_someone_listens(store) -> None:
    from chatlog.http.fanout import Fanout
    from tests.helpers import message

    fanout = Fanout(store, buffer=10, block=0.05)
    assert not fanout.running
    sub = await fanout.subscribe()
    assert fanout.running
    await store.append_one(message("Lazy", content="seen"))
    async with asyncio.timeout(5):
        await sub.wakeup.wait()
    assert [e.data["content"] for e in sub.drain()] == ["seen"]
    fanout.unsubscribe(sub)
    await eventually(lambda: not fanout.running, timeout=5, what="the fan-out stopping")
    # A later subscriber starts it again, from the head: only new events.
    again = await fanout.subscribe()
    await store.append_one(message("Lazy", content="later"))
    async with asyncio.timeout(5):
        await again.wakeup.wait()
    assert [e.data["content"] for e in again.drain()] == ["later"]
    await fanout.stop()


async def test_sse_subscriber_over_its_buffer_is_cut_off_and_resumes_exactly(api) -> None:
    from tests.helpers import message

    client = await api(sse_buffer=2)
    st = client.app[STATE]
    first = await post_message(client, "Cut", "m0")
    resp = await client.get("/v1/events/stream")
    got = await read_sse(resp, 1)
    assert got[0][1]["id"] == first["message_id"]
    # The catch-up sends what the log has before it subscribes: append the
    # burst only once the subscriber is live, or the catch-up reads it instead
    # (under load it did, and nothing was ever cut off).
    await eventually(lambda: len(st.fanout) == 1 and st.fanout.running, timeout=10,
                     what="the subscriber joining the fan-out")
    # Three events of one thread in one append reach the fan-out as one
    # batch: they cannot fit a 2-event buffer, so this subscriber is cut off.
    burst = [message("Cut", "thread-b", f"b{i}") for i in range(3)]
    await st.store.append(burst)
    body = b""
    async with asyncio.timeout(10):
        while chunk := await resp.content.readline():
            body += chunk
    assert b"reconnect with Last-Event-ID" in body
    metrics = await (await client.get("/metrics")).text()
    assert "chatlog_sse_cutoffs_total 1.0" in metrics
    # Whatever it had been sent before the cut-off (the catch-up may have
    # read part of the burst), reconnecting with its last id gets the rest:
    # every event once, in order.
    seen = [(i, d) for i, d in got]
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                      and not line.startswith(":"))
        if "data" in fields:
            seen.append((fields["id"], json.loads(fields["data"])))
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": seen[-1][0]})
    seen += await read_sse(resp, 4 - len(seen))
    assert [d["id"] for _, d in seen] == [first["message_id"], *(str(e.id) for e in burst)]
    resp.close()


async def test_many_subscribers_connecting_at_once_all_get_their_stream(client) -> None:
    import aiohttp

    posted = await post_message(client, "Crowd", "hello crowd")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(str(client.make_url("")), connector=connector) as http:

        async def subscriber() -> str:
            async with http.get("/v1/events/stream", params={"project": "Crowd"}) as resp:
                assert resp.status == 200, await resp.text()
                return (await read_sse(resp, 1, timeout=30))[0][1]["id"]

        # More subscribers than the Redis connection pool has connections.
        got = await asyncio.gather(*(subscriber() for _ in range(150)))
    assert got == [posted["message_id"]] * 150


async def test_two_partitions_replay_and_resume_with_multi_position_cursors(api) -> None:
    from chatlog.eventstore import partition_of
    from chatlog.identity import normalize_project_id

    client = await api(partitions=2)
    names: dict[int, str] = {}
    for i in range(50):
        name = f"proj-{i}"
        names.setdefault(partition_of(normalize_project_id(name).key, 2), name)
        if len(names) == 2:
            break
    posted = []
    for i in range(6):
        posted.append(await post_message(client, names[i % 2], f"m{i}"))
    assert {m["partition"] for m in posted} == {0, 1}

    seen, after = [], "0"
    while True:
        page = await (await client.get("/v1/events", params={"after": after, "limit": "2"})).json()
        seen += [e["id"] for e in page["events"]]
        assert all("," in e["cursor"] for e in page["events"])
        after = page["cursor"]
        if not page["has_more"]:
            break
    assert sorted(seen) == sorted(m["message_id"] for m in posted)
    assert len(seen) == len(set(seen))

    resp = await client.get("/v1/events/stream")
    got = await read_sse(resp, 6)
    last_id = got[-1][0]
    assert last_id.count(",") == 1
    resp.close()
    more = [await post_message(client, names[i % 2], f"n{i}") for i in range(4)]
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": last_id})
    again = await read_sse(resp, 4)
    assert sorted(d["id"] for _, d in again) == sorted(m["message_id"] for m in more)
    resp.close()
