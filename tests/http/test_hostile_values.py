"""Values that passed validation but broke the readers (an adversarial pass, stop 29).

- JSON nested deep enough that orjson cannot write it back inside an envelope was
  accepted through the big-body path (>= 64 KiB), after which every replay that
  reached it answered 500 and the shared SSE fan-out died for every project. Stored
  JSON now has one depth limit on both paths, and readers write back what older
  versions stored.
- Cursors spelled with non-ASCII digits (fullwidth ``１-0``) passed the pattern and
  failed in the Valkey script: a 500 for ``after``, ``before`` and ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from chatlog.errors import InvalidInput
from chatlog.event_build import construct
from chatlog.events import SCHEMA_VERSION, MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.codec import parse_position
from chatlog.identity import normalize_project_id
from chatlog.json_values import MAX_JSON_DEPTH
from tests.helpers import eventually
from tests.http.conftest import post_message, read_sse

PAD = "a" * 70_000  # makes a body big (>= 64 KiB): parsed by the other path


def _nested(levels: int) -> bytes:
    """A JSON object ``{"d": [[...]]}`` that is ``levels`` deep (the object is one)."""
    return b'{"d":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def _body(levels: int, big: bool) -> bytes:
    pad = b',"pad":"' + PAD.encode() + b'"' if big else b""
    return (b'{"role":"user","content":"deep","thread_id":null,"metadata":'
            + _nested(levels)[:-1] + pad + b"}}")


@pytest.mark.parametrize("big", [False, True], ids=["small body", "big body"])
async def test_json_nested_past_the_limit_is_refused_on_both_paths(client: Any,
                                                                   big: bool) -> None:
    for levels in (MAX_JSON_DEPTH + 1, 253):
        resp = await client.post("/v1/projects/Deep/messages", data=_body(levels, big),
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 400, (levels, await resp.text())
        assert resp.content_type == "application/problem+json"
        detail = (await resp.json())["detail"]
        assert "nested" in detail or "recursion limit" in detail, detail  # (JSON parser's)
    # Nothing was written: the project has no events.
    resp = await client.get("/v1/events", params={"project": "Deep"})
    assert resp.status == 200
    assert (await resp.json())["events"] == []

    # At the limit it is stored, and reads back as it was.
    resp = await client.post("/v1/projects/Deep/messages", data=_body(MAX_JSON_DEPTH, big),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    resp = await client.get("/v1/events", params={"project": "Deep"})
    assert resp.status == 200, await resp.text()
    (event,) = (await resp.json())["events"]
    assert orjson.dumps(event["data"]["metadata"]["d"]) == _nested(MAX_JSON_DEPTH)[5:-1]


async def test_an_event_stored_deeper_than_json_writes_back_is_replayed_and_streamed(
    client: Any, redis_url: str, key_prefix: str
) -> None:
    """Older versions stored such a value (a big message's metadata 254 levels deep,
    the most orjson writes alone). Replay answers it, and the live stream carries what
    follows, in its project and in others."""
    resp = await client.get("/v1/events/stream", params={"project": "Other"})
    assert resp.status == 200
    deep = _nested(254)[:-1] + b',"pad":"' + PAD.encode() + b'"}'
    store = await EventStore.open(redis_url, prefix=key_prefix)
    try:
        # built as the HTTP path built it then: the metadata a Fragment of its JSON
        event = construct(NewEvent, {
            "id": uuid.uuid4(), "id_supplied": False, "type": MessageAppended.event_type,
            "project": normalize_project_id("Legacy"), "project_name": "Legacy",
            "aggregate_type": "thread", "aggregate_id": "t-1",
            "data": {"thread_id": "t-1", "role": "user", "content": "old",
                     "metadata": orjson.Fragment(deep)},
            "schema_version": SCHEMA_VERSION, "blob": None})
        await store.append_one(event)
    finally:
        await store.close()
    after = await post_message(client, "Other", "after the deep one")

    replay = await client.get("/v1/events", params={"project": "Legacy"})
    assert replay.status == 200, await replay.text()
    (event,) = (await replay.json())["events"]
    assert orjson.dumps(event["data"]["metadata"]) == deep

    ((_, streamed),) = await read_sse(resp, 1)
    assert streamed["data"]["content"] == "after the deep one"
    assert streamed["position"] == after["position"]
    resp.close()

    resp = await client.get("/v1/projects/Legacy/threads/t-1/messages",
                            params={"min_position": event["position"]})
    assert resp.status == 200, await resp.text()
    (message,) = (await resp.json())["messages"]
    assert orjson.dumps(message["metadata"]) == deep

    resp = await client.get("/v1/events/stream", params={"project": "Legacy"},
                            headers={"Last-Event-ID": "0"})
    assert resp.status == 200
    ((_, caught_up),) = await read_sse(resp, 1)
    assert orjson.dumps(caught_up["data"]["metadata"]) == deep
    resp.close()


@pytest.mark.parametrize("cursor", ["\uff11-0", "\u0661-\u0660", "1-\uff10"])
async def test_a_cursor_in_other_digits_is_a_400(client: Any, cursor: str) -> None:
    await post_message(client, "Digits")
    for params in ({"after": cursor}, {"before": cursor}, {"project": "Digits",
                                                           "after": cursor}):
        resp = await client.get("/v1/events", params=params)
        assert resp.status == 400, (params, await resp.text())
        assert resp.content_type == "application/problem+json"
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": cursor})
    assert resp.status == 400, await resp.text()
    with pytest.raises(InvalidInput):
        parse_position(cursor)


async def test_the_fanout_survives_an_event_it_cannot_decode(client: Any, redis_url: str,
                                                             key_prefix: str) -> None:
    """Whatever a reader trips on, live subscribers are not left waiting in silence:
    an event the fan-out cannot decode cuts them off (they resume from their last id,
    and the catch-up read says what is wrong), and the next subscriber is served."""
    resp = await client.get("/v1/events/stream", params={"project": "Broken"})
    assert resp.status == 200

    async def subscribed() -> bool:  # the fan-out has it before the entry goes in
        metrics = await (await client.get("/metrics")).text()
        return "chatlog_sse_subscribers 1.0" in metrics

    await eventually(subscribed, what="the stream to join the fan-out")
    store = await EventStore.open(redis_url, prefix=key_prefix)
    try:  # a stream entry no version of chatlog writes: its body is not JSON
        log = store.keys.log(store.partition_of(normalize_project_id("Broken")))
        await store.redis.xadd(log, {"i": str(uuid.uuid4()), "t": "message.appended",
                                     "a": f"{normalize_project_id('Broken')}/thread/t",
                                     "v": "1", "b": b"\xff not json"})
    finally:
        await store.close()
    async with asyncio.timeout(10):
        rest = await resp.content.read()  # the stream ends: the subscriber is cut off
    assert b"data:" not in rest
    resp.close()
    fresh = await client.get("/v1/events/stream", params={"project": "Fine"})
    posted = await post_message(client, "Fine", "still served")
    ((_, streamed),) = await read_sse(fresh, 1)
    assert streamed["position"] == posted["position"]
    fresh.close()
