"""Honest append outcomes over HTTP (issue 15 #1, issue 14): a reused event_id with
other content is a 409; a store that stops answering mid-load gives 504 "outcome
unknown" with the event_id, and 503 only for appends that were not written."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

from chatlog.eventstore import EmbeddedValkey, EventStore
from tests.helpers import eventually
from tests.http.conftest import post_message

URL = "/v1/projects/{}/messages"


async def test_an_event_id_reused_for_other_content_is_a_409(client) -> None:
    event_id = str(uuid.uuid4())
    first = await post_message(client, "P", "original", event_id=event_id)
    # A retry of the same message (a new thread each try) is the original answer.
    retry = await client.post(URL.format("P"), json={
        "thread_id": None, "role": "user", "content": "original", "event_id": event_id})
    assert retry.status == 200, await retry.text()
    doc = await retry.json()
    assert doc["duplicate"] and doc["thread_id"] == first["thread_id"]
    other = await client.post(URL.format("P"), json={
        "role": "user", "content": "something else", "event_id": event_id})
    assert other.status == 409, await other.text()
    assert other.content_type == "application/problem+json"
    problem = await other.json()
    assert f"event_id {event_id} was used for a different event" in problem["detail"]
    assert problem["event_id"] == event_id
    replay = await (await client.get("/v1/events", params={"project": "P"})).json()
    assert [e["data"]["content"] for e in replay["events"]] == ["original"]


async def test_no_append_answered_503_is_in_the_log_after_sigstop(
    api, valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory()
    # A reply timeout of 2 s (the URL's socket_timeout; 10 s by default): the stopped
    # server is noticed sooner, and the outcome check then gives up after 1 s.
    client = await api(url=server.url + "?socket_timeout=2", outcome_timeout=1.0)
    answers: list[tuple[str, int, dict[str, Any]]] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            content = f"w{n}-{i}"
            i += 1
            resp = await client.post(URL.format("Load"), json={"role": "u", "content": content})
            answers.append((content, resp.status, await resp.json(content_type=None)))

    writers = [asyncio.create_task(writer(n)) for n in range(16)]
    try:
        await eventually(lambda: len(answers) >= 200, timeout=30, what="200 appends")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            await eventually(lambda: any(s >= 500 for _, s, _ in answers), timeout=60,
                             interval=0.1, what="an append the stopped store did not answer")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        count = len(answers)
        await eventually(lambda: any(s == 201 for _, s, _ in answers[count:]), timeout=30,
                         what="appends succeeding again")
    finally:
        stop.set()
        await asyncio.gather(*writers)
    statuses = {s for _, s, _ in answers}
    assert statuses <= {201, 503, 504}, statuses
    acknowledged = {c for c, s, _ in answers if s == 201}
    refused = {c for c, s, _ in answers if s == 503}
    logged = await _logged(server.url, key_prefix)
    assert acknowledged <= set(logged)
    assert not refused & set(logged), "an append answered 503 is in the log"
    unknown = [(c, d) for c, s, d in answers if s == 504]
    assert unknown, "the stopped store should have left some outcomes unknown"
    # Each "unknown" retried with its event_id ends up in the log exactly once.
    for content, doc in unknown:
        assert doc["retry_safe"] is True and uuid.UUID(doc["event_id"])
        resp = await client.post(URL.format("Load"), json={
            "role": "u", "content": content, "event_id": doc["event_id"]})
        assert resp.status in (200, 201), await resp.text()
    logged = await _logged(server.url, key_prefix)
    assert len(logged) == len(set(logged)), "an append is in the log twice"
    assert {c for c, _ in unknown} <= set(logged)


async def _logged(url: str, prefix: str) -> list[str]:
    store = await EventStore.open(url, prefix=prefix)
    try:
        return [e.data["content"] for e in await store.read(0, limit=100_000)]
    finally:
        await store.close()
