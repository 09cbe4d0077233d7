"""Hostile inputs to the endpoints that read, keep or send big values (workflow
commands, jobs, messages, replay and SSE), small and padded past the size from which
the worker process parses them: a problem+json 4xx each, never a 500 or text/plain,
and no ERROR logged (issue 15 #4, #9)."""

from __future__ import annotations

import gzip
import logging
from typing import Any

import pytest

from chatlog import offload

PROBLEM = "application/problem+json"
PAD = b" " * offload.BIG
WF = "/v1/projects/P/workflows/wf-h"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: Hostile JSON objects (the value of a body's big field), each small as written.
VALUES = {
    "non-UTF-8 string": b'{"a": "\xff\xfe"}',
    "lone surrogate": b'{"a": "\\ud800"}',
    "integer past 64 bits": b'{"a": 18446744073709551616}',
    "negative integer past 64 bits": b'{"a": -9223372036854775809}',
    "float overflow": b'{"a": 1e400}',
    "nested 300 deep": b'{"a": ' + _nested(300) + b"}",
    "nested 5000 deep": b'{"a": ' + _nested(5000) + b"}",
    "an array, not an object": b"[1, 2]",
    "a string, not an object": b'"x"',
    "truncated": b'{"a": [1, 2',
}

#: path -> a body with {value} where the hostile value goes.
BODIES = {
    "/v1/projects/P/workflows": b'{"workflow_id": "wf-x", "input": %s}',
    WF + "/start": b'{"input": %s}',
    WF + "/complete": b'{"result": %s}',
    "/v1/projects/P/jobs": b'{"kind": "k", "payload": %s}',
    "/v1/projects/P/messages": b'{"role": "u", "content": "c", "metadata": %s}',
}


async def _check(resp: Any, what: str) -> None:
    text = await resp.text()
    assert 400 <= resp.status < 500, (what, resp.status, text[:300])
    assert resp.content_type == PROBLEM, (what, resp.content_type, text[:300])
    assert "Traceback" not in text, (what, text[:300])


@pytest.fixture
async def running(client: Any) -> Any:
    """The client, with workflow wf-h created (commands on it reach their body checks)."""
    created = await client.post("/v1/projects/P/workflows", json={"workflow_id": "wf-h"})
    assert created.status == 201, await created.text()
    return client


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
async def test_hostile_bodies_are_4xx_problems(
    running: Any, big: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for path, template in BODIES.items():
        for what, value in VALUES.items():
            raw = template % value + (PAD if big else b"")
            resp = await running.post(path, data=raw, headers={"Content-Type": "application/json"})
            await _check(resp, f"{path}: {what}")
        for what, raw in {
            "wrong top-level type": b"[1]",
            "unknown field": b'{"nope": 1}',
            "wrong field type": b'{"kind": 1, "approved": "yes", "role": 2}',
            "non-UTF-8 outside a string": b"{\xff}",
        }.items():
            resp = await running.post(path, data=raw + (PAD if big else b""),
                                      headers={"Content-Type": "application/json"})
            await _check(resp, f"{path}: {what}")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, errors


async def test_a_gzip_bomb_is_a_413_problem(running: Any) -> None:
    bomb = gzip.compress(b'{"input": {"a": "' + b"0" * 50_000_000 + b'"}}')
    for path in BODIES:
        resp = await running.post(path, data=bomb, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})
        await _check(resp, f"{path}: gzip bomb")
        assert resp.status == 413, (path, resp.status)


async def test_hostile_queries_of_the_reading_endpoints_are_4xx_problems(running: Any) -> None:
    for path, params in [
        ("/v1/projects/P/jobs", {"state": "nope"}),
        ("/v1/projects/P/jobs", {"limit": "99999999999999999999999"}),
        ("/v1/projects/P/jobs", {"cursor": "W1s5OTk5OTk5OTk5OTk5OTk5OTk5OTk5XV0"}),
        ("/v1/projects/P/jobs", {"cursor": "WzE4NDQ2NzQ0MDczNzA5NTUxNjE2LCAieCJd"}),
        (WF, {"wait_for": "running", "timeout": "nan"}),
        (WF, {"wait_for": "running", "timeout": "1e400"}),
        (WF, {"wait_for": "nope"}),
        (WF, {"min_position": "1-" + "9" * 30}),
        ("/v1/events", {"after": "99999999999999999999999-0"}),
        ("/v1/events", {"project": "P", "limit": "-1"}),
        ("/v1/events/stream", {"after": "x-y"}),
        ("/v1/events/stream", {"types": "no.such.type"}),
    ]:
        resp = await running.get(path, params=params)
        await _check(resp, f"{path} {params}")
    for value in ("nan", "inf", "1e400"):  # said as such, not as "above 300"
        resp = await running.get(WF, params={"wait_for": "running", "timeout": value})
        assert "finite number" in (await resp.json())["detail"], value
    resp = await running.get("/v1/events/stream", headers={"Last-Event-ID": "\u00ff" * 3})
    await _check(resp, "Last-Event-ID not a cursor")
