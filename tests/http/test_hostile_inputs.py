"""Inputs that answered 500 with an ERROR traceback now answer a problem+json 4xx
(issue 15 #4)."""

from __future__ import annotations

import base64
import logging

import aiohttp
import orjson
import pytest

from tests.http.conftest import bearer
from tests.http.live import Live
from tests.http.rawhttp import exchange

PROBLEM = "application/problem+json"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_the_five_inputs_that_answered_500_are_4xx_problems(
    live: Live, tokens_file, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = await live(services=True, tokens_file=tokens_file)
    caplog.set_level(logging.WARNING)
    admin = bearer("admin")
    requests = {
        "threads cursor beyond SQLite": (
            "GET", "/v1/projects/Blog-Project/threads",
            {"cursor": _b64(orjson.dumps([2**63, 0]))}, admin, None),
        "workflows cursor beyond SQLite": (
            "GET", "/v1/projects/Blog-Project/workflows",
            {"cursor": _b64(orjson.dumps([2**63, 0, "x"]))}, admin, None),
        "gzip body that is not gzip": (
            "POST", "/v1/projects/Blog-Project/messages", {},
            {**admin, "Content-Type": "application/json", "Content-Encoding": "gzip"},
            b'{"role": "u", "content": "c"}'),
        "NUL in a static path": ("GET", "/static/%00", {}, {}, None),
    }
    async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
        for what, (method, path, params, headers, data) in requests.items():
            async with http.request(method, path, params=params, headers=headers,
                                    data=data) as resp:
                assert 400 <= resp.status < 500, (what, resp.status, await resp.text())
                assert resp.content_type == PROBLEM, (what, resp.content_type)
                doc = await resp.json(content_type=None)
                assert doc["detail"] and "Traceback" not in doc["detail"], (what, doc)
    # Raw bytes: a client library would encode the header as UTF-8 first.
    answer = await exchange(host, port, b"GET /v1/projects HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: Bearer \xff\xfe-not-utf8-token\r\n\r\n")
    assert answer is not None and answer.status == 401, answer
    assert answer.content_type == PROBLEM
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in caplog.records]
