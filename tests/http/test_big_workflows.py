"""A workflow's legal 1 MB values (its input at create and at start, its result) are
never parsed in the server's process (issue 15 #9): not to validate a command, not to
fold its history for a later command or a 409, not to answer a read or a long-poll."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.http.conftest import counting_big_parses

TINY = b"[" + b",".join([b"0"] * 500_000) + b"]"
JSON = {"Content-Type": "application/json"}
BASE = "/v1/projects/P/workflows"


@pytest.fixture
def big_parses() -> Iterator[list[int]]:
    """The sizes of the big documents orjson parses in this process while the test runs."""
    with counting_big_parses() as found:
        yield found


async def _post(client: Any, path: str, raw: bytes) -> Any:
    return await client.post(path, data=raw, headers=JSON)


async def test_big_start_input_and_result_are_never_parsed_in_the_server_process(
    client: Any, big_parses: list[int]
) -> None:
    created = await _post(client, BASE, b'{"workflow_id": "wf-1", "input": {"c": 1, "x": 2}}')
    assert created.status == 201, await created.text()
    item = f"{BASE}/wf-1"
    started = await _post(client, f"{item}/start", b'{"input": {"x": 3, "a": ' + TINY + b"}}")
    assert started.status == 200, await started.text()
    done = await _post(client, f"{item}/complete", b'{"result": {"r": ' + TINY + b"}}")
    assert done.status == 200, await done.text()
    read = await client.get(item)
    polled = await client.get(item, params={"wait_for": "completed", "timeout": "5"})
    again = await _post(client, BASE, b'{"workflow_id": "wf-1"}')  # folds the history: 409
    assert again.status == 409, await again.text()
    # A big body where none is legal (a reason is a short string) is refused off-process too.
    cancel = await _post(client, f"{item}/cancel", b'{"reason": "x", "pad": ' + TINY + b"}")
    assert cancel.status == 400, await cancel.text()
    assert cancel.content_type == "application/problem+json"
    assert big_parses == []
    raw_read, raw_polled = await read.read(), await polled.read()
    answers = [await started.read(), await done.read(), raw_read, raw_polled]
    big_parses.clear()
    tiny = [0] * 500_000
    views = [orjson.loads(doc) for doc in answers]
    assert [v["input"] for v in views] == [{"c": 1, "x": 3, "a": tiny}] * 4
    assert [v["result"] for v in views[1:]] == [{"r": tiny}] * 3
    assert [v["state"] for v in views] == ["running"] + ["completed"] * 3
    assert views[3]["reached"] is True
    history = views[2]["history"]
    assert [e["type"] for e in history] == [
        "workflow.created", "workflow.started", "workflow.completed"]
    assert history[1]["data"]["input"] == {"x": 3, "a": tiny}
    assert history[2]["data"]["result"] == {"r": tiny}


async def test_a_big_created_input_is_not_parsed_to_start_read_or_refuse_a_second_create(
    client: Any, big_parses: list[int]
) -> None:
    raw = b'{"workflow_id": "wf-big", "input": {"z": 1, "a": ' + TINY + b"}}"
    created = await _post(client, BASE, raw)
    assert created.status == 201, await created.text()
    again = await _post(client, BASE, raw)
    assert again.status == 409, await again.text()
    assert (await again.json())["status"] == 409
    started = await client.post(f"{BASE}/wf-big/start", json={"input": {"y": 2, "z": 3}})
    assert started.status == 200, await started.text()
    read = await client.get(f"{BASE}/wf-big")
    assert read.status == 200
    assert big_parses == []
    raw_started, raw_read = await started.read(), await read.read()
    big_parses.clear()
    expected = {"z": 3, "a": [0] * 500_000, "y": 2}
    assert orjson.loads(raw_started)["input"] == expected
    view = orjson.loads(raw_read)
    assert view["input"] == expected
    assert view["history"][0]["data"]["input"] == {"z": 1, "a": [0] * 500_000}
