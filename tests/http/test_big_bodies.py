"""A legal 1 MB body of half a million tiny JSON values is parsed and validated off the
event loop (issue 15 #9); the figure (/healthz max latency) is in bench/bench_bigbody.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any

import orjson
import pytest
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from pydantic import AfterValidator

from chatlog import offload
from chatlog.http._routing import read_body
from chatlog.http.models import Body, PostMessage
from tests.http.conftest import counting_big_parses, post_message

PATHOLOGICAL = (b'{"role": "user", "content": "x", "metadata": {"a": ['
                + b",".join([b"0"] * 500_000) + b"]}}")

seen_threads: list[int] = []


def _record_thread(value: dict[str, Any]) -> dict[str, Any]:
    seen_threads.append(threading.get_ident())
    return value


class Probe(Body):
    """A body whose validator notes the thread it runs in."""

    role: str
    content: str
    metadata: Annotated[dict[str, Any], AfterValidator(_record_thread)]


class _Protocol:
    transport = None
    _reading_paused = False

    def pause_reading(self, **_: object) -> None: ...

    def resume_reading(self, **_: object) -> None: ...


async def _read(model: type[Body], raw: bytes) -> Body:
    payload = StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    payload.feed_data(raw)
    payload.feed_eof()
    request = make_mocked_request("POST", "/", payload=payload,
                                  headers={"Content-Length": str(len(raw))},
                                  client_max_size=2**21)
    return await read_body(request, model)


async def test_a_big_body_is_validated_off_the_event_loop_thread() -> None:
    seen_threads.clear()
    body = await _read(Probe, PATHOLOGICAL)
    assert len(body.metadata["a"]) == 500_000  # type: ignore[attr-defined]
    assert seen_threads and seen_threads[0] != threading.get_ident()


async def test_big_bodies_keep_the_strict_rules_and_errors(client) -> None:
    # The same answers as a small body: strict JSON types, fields named.
    parsed = await _read(PostMessage, PATHOLOGICAL)
    assert isinstance(parsed, PostMessage) and parsed.role == "user"
    pad = b" " * 70_000
    for raw, field in [
        (b'{"role": 5, "content": "x"}' + pad, "role"),
        (b'{"role": "u", "content": "x", "expected_version": "3"}' + pad, "expected_version"),
        (b'{"role": "u", "content": "x", "event_id": "nope"}' + pad, "event_id"),
        (b'{"role": "u", "content": "x", "metadata": {"f": [1e400]}}' + pad, "metadata|JSON"),
        (b'{"role": "u", "content": ["x"]}' + pad, "content"),
        (b'[1, 2]' + pad, "body"),
    ]:
        resp = await client.post("/v1/projects/P/messages", data=raw,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 400, (raw[:60], await resp.text())
        doc = await resp.json()
        fields = {e["field"] for e in doc.get("errors", [])}
        assert any(f in fields or f in doc["detail"] for f in field.split("|")), doc
    doc = await post_message(client, "P", "big", metadata={"a": list(range(20_000))})
    assert doc["version"] == 1


async def test_a_big_body_with_an_integer_beyond_64_bits_is_refused(client) -> None:
    raw = (b'{"role": "u", "content": "x", "metadata": {"n": 18446744073709551616, "pad": "'
           + b"p" * 70_000 + b'"}}')
    resp = await client.post("/v1/projects/P/messages", data=raw,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert "64-bit" in (await resp.json())["detail"]


async def test_a_big_message_is_parsed_and_projected_in_another_process(client) -> None:
    """Parsing a big body holds the GIL for tens of ms even in a thread (issue 15 #9):
    the server's process must not parse it at all, neither to append it nor to
    project it. (The test client shares the server's process, so it counts here.)"""
    with counting_big_parses() as big_parses:
        raw = (b'{"role": "user", "content": "big", "thread_id": "t-big", "metadata": '
               b'{"z": 1, "a": [' + b",".join([b"0"] * 200_000) + b"]}}")
        resp = await client.post("/v1/projects/P/messages", data=raw,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 201, await resp.text()
        posted = await resp.json()
        resp = await client.get("/v1/projects/P/threads", params={
            "min_position": posted["position"]})
        assert resp.status == 200
        assert big_parses == []
    resp = await client.get("/v1/projects/P/threads/t-big/messages")
    messages = (await resp.json())["messages"]
    assert messages[0]["metadata"] == {"z": 1, "a": [0] * 200_000}


async def test_a_big_and_a_small_form_of_one_message_have_one_digest(client) -> None:
    """The worker's digest is the server's: a retry of a big body whose id was used
    for the same content is a duplicate, for other content a 409."""
    import uuid

    event_id = str(uuid.uuid4())
    metadata = {"a": list(range(15_000))}
    first = await client.post("/v1/projects/P/messages", json={
        "role": "user", "content": "x", "thread_id": "t1", "event_id": event_id,
        "metadata": metadata})
    assert first.status == 201, await first.text()
    pretty = orjson.dumps({"role": "user", "content": "x", "thread_id": "t1",
                           "event_id": event_id, "metadata": metadata},
                          option=orjson.OPT_INDENT_2)
    assert len(pretty) >= offload.BIG
    again = await client.post("/v1/projects/P/messages", data=pretty,
                              headers={"Content-Type": "application/json"})
    assert again.status == 200, await again.text()
    other = await client.post("/v1/projects/P/messages", data=pretty.replace(b'"x"', b'"y"'),
                              headers={"Content-Type": "application/json"})
    assert other.status == 409, await other.text()


async def test_every_big_body_is_read_by_the_one_big_json_reader(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages, jobs and workflows read a big body through ``_big_json.read_big``
    (one set of rules, one worker call), not a copy of it per endpoint."""
    from chatlog.http import _big_json

    real_run = offload.run
    called: list[str] = []

    async def recording_run(fn: Any, *args: Any) -> Any:
        called.append(f"{fn.__module__}.{fn.__name__}")
        return await real_run(fn, *args)

    monkeypatch.setattr(offload, "run", recording_run)
    tiny = b"[" + b",".join([b"0"] * 40_000) + b"]"
    for path, raw in [
        ("messages", b'{"role": "user", "content": "x", "metadata": {"a": ' + tiny + b"}}"),
        ("jobs", b'{"kind": "k", "payload": {"a": ' + tiny + b"}}"),
        ("workflows", b'{"input": {"a": ' + tiny + b"}}"),
    ]:
        called.clear()
        resp = await client.post(f"/v1/projects/P/{path}", data=raw,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 201, await resp.text()
        assert called[:1] == [f"{_big_json.__name__}.prepare"], (path, called)
