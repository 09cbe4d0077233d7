"""A legal 1 MB event goes out to its readers (live SSE subscribers through the shared
fan-out, an SSE catch-up, a JSON replay forwards and backwards) as the stored JSON, never parsed nor encoded
again in the server's process (issue 15 #9); the figure is bench_bigbody.py --endpoint sse."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from chatlog import offload
from chatlog.http._state import STATE
from tests.helpers import eventually
from tests.http.conftest import post_message

TINY = [0] * 500_000
BIG_MESSAGE = (b'{"thread_id": "t", "role": "user", "content": "big", "metadata": {"a": '
               + orjson.dumps(TINY) + b', "z": "\xc3\xa9"}}')


class Frames:
    """An SSE answer read frame by frame (a big frame is longer than aiohttp's line limit)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.pending = bytearray()

    async def data_with(self, what: bytes) -> bytes:
        """The data line of the next frame whose data holds ``what``."""
        async with asyncio.timeout(20):
            while True:
                end = self.pending.find(b"\n\n")
                if end < 0:
                    self.pending += await self.response.content.readany()
                    continue
                frame = bytes(self.pending[:end])
                del self.pending[:end + 2]
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: ") and what in line:
                        return line[len(b"data: "):]


def _holds_fragment(value: Any, depth: int = 3) -> bool:
    """Whether ``value`` is or holds (near its top) an ``orjson.Fragment``: JSON copied
    as it is, not a parsed value written again."""
    if isinstance(value, orjson.Fragment):
        return True
    if depth and isinstance(value, dict):
        return any(_holds_fragment(v, depth - 1) for v in value.values())
    return False


async def test_big_events_reach_sse_and_replay_readers_unparsed(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await post_message(client, "Big", "before")
    live_answer = await client.get("/v1/events/stream", params={"project": "Big"})
    assert live_answer.status == 200
    live = Frames(live_answer)
    await live.data_with(before["message_id"].encode())
    fanout = client.server.app[STATE].fanout
    await eventually(lambda: len(fanout) == 1, what="the stream to subscribe to the fan-out")

    real_loads, real_dumps = orjson.loads, orjson.dumps
    big: list[str] = []

    def counting_loads(data: Any) -> Any:
        if len(data) >= offload.BIG:
            big.append(f"loads {len(data)}")
        return real_loads(data)

    def counting_dumps(value: Any, *args: Any, **kwargs: Any) -> bytes:
        out = real_dumps(value, *args, **kwargs)
        if len(out) >= offload.BIG and not _holds_fragment(value):
            big.append(f"dumps {len(out)}")  # a parsed big value written again
        return out

    monkeypatch.setattr(orjson, "loads", counting_loads)
    monkeypatch.setattr(orjson, "dumps", counting_dumps)
    posted = await client.post("/v1/projects/Big/messages", data=BIG_MESSAGE,
                               headers={"Content-Type": "application/json"})
    assert posted.status == 201, await posted.text()
    message_id = (await posted.json())["message_id"].encode()
    live_data = await live.data_with(message_id)
    caught_up = await client.get("/v1/events/stream",
                                 params={"project": "Big", "after": before["position"]})
    catch_up_data = await Frames(caught_up).data_with(message_id)
    replay = await client.get("/v1/events",
                              params={"project": "Big", "after": before["position"]})
    assert replay.status == 200
    replayed = await replay.read()
    backward = await client.get("/v1/events", params={"project": "Big", "before": "end"})
    assert backward.status == 200
    newest_first = await backward.read()
    live_answer.close()
    caught_up.close()
    assert big == []
    monkeypatch.setattr(orjson, "loads", real_loads)
    monkeypatch.setattr(orjson, "dumps", real_dumps)
    metadata = {"a": TINY, "z": "é"}
    for doc in (orjson.loads(live_data), orjson.loads(catch_up_data),
                orjson.loads(replayed)["events"][0], orjson.loads(newest_first)["events"][0]):
        assert doc["id"] == message_id.decode()
        assert doc["type"] == "message.appended" and doc["project_name"] == "Big"
        assert doc["data"]["metadata"] == metadata and doc["data"]["content"] == "big"
        assert doc["cursor"] and doc["position"]
        assert list(doc) == ["id", "type", "project", "project_name", "aggregate_type",
                             "aggregate_id", "version", "partition", "position", "time",
                             "data", "schema_version", "cursor"]
