"""Requests aiohttp's parser rejects are answered as problem+json, never text/plain or
silence, and log at most one rate-limited WARNING line: no tracebacks (issue 15 #5, #8)."""

from __future__ import annotations

import gzip
import logging
import socket
from typing import Any

import pytest

from tests.http.live import Live
from tests.http.rawhttp import RawAnswer, exchange

PROBLEM = "application/problem+json"
POST = b"POST /v1/projects/p/messages HTTP/1.1\r\nHost: x\r\n"
BODY = b'{"role": "user", "content": "hi"}'

def _chunked(*chunks: bytes) -> bytes:
    return (POST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(chunks))


MALFORMED: dict[str, bytes] = {
    "negative content-length": POST + b"Content-Length: -5\r\n\r\n" + BODY,
    "duplicate content-length": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
    + BODY,
    "content-length and transfer-encoding": POST + b"Content-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad chunk size": _chunked(b"zz\r\nhello\r\n0\r\n\r\n"),
    "transfer-encoding gzip": POST + b"Transfer-Encoding: gzip\r\n\r\n" + BODY,
    "header over 64 KiB": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 70_000 + b"\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "header with NUL": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "URL over 64 KiB": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid method": b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/9.9": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "content-encoding br": POST + b"Content-Encoding: br\r\nContent-Length: %d\r\n\r\n"
    % len(BODY) + BODY,
    "content-encoding zstd": POST + b"Content-Encoding: zstd\r\nContent-Length: %d\r\n\r\n"
    % len(BODY) + BODY,
    "invalid deflate": POST + b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
    % len(BODY) + BODY,
    "gzip that is not gzip": POST + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    % len(BODY) + BODY,
    "invalid char in url query": b"GET /v1/events?after=1732\x01-0 HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
    + b"\r\n\r\n",
}


def _assert_problem(answer: RawAnswer | None, what: str) -> dict[str, Any]:
    assert answer is not None, f"{what}: the connection closed without an answer"
    assert 400 <= answer.status < 500, (what, answer.status, answer.body[:300])
    assert answer.content_type == PROBLEM, (what, answer.headers, answer.body[:300])
    doc: dict[str, Any] = answer.json()
    assert doc["status"] == answer.status and doc["detail"], (what, doc)
    assert "Traceback" not in doc["detail"]
    return doc


async def test_parser_level_errors_are_problem_json_and_log_no_traceback(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = await live()
    caplog.set_level(logging.DEBUG)
    for what, raw in MALFORMED.items():
        _assert_problem(await exchange(host, port, raw), what)
    # One WARNING line at most for the whole burst (rate-limited); no ERROR, no traceback.
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]  # malformed + disconnect
    # A good request on a fresh connection is still answered.
    ok = await exchange(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok is not None and ok.status == 200


async def test_a_malformed_second_chunk_is_answered_not_hung(live: Live) -> None:
    host, port = await live()
    first, rest = BODY[:10], BODY[10:]
    answer = await exchange(
        host, port,
        _chunked(b"%x\r\n%s\r\n" % (len(first), first)),
        b"%x\r\n%s\r\nNOT-A-CHUNK\r\n\r\n" % (len(rest), rest),
        timeout=10, pause=0.2,
    )
    _assert_problem(answer, "malformed second chunk")


async def test_a_valid_gzip_body_is_still_accepted(live: Live) -> None:
    host, port = await live()
    body = gzip.compress(BODY)
    answer = await exchange(host, port, POST + b"Content-Type: application/json\r\n"
                            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
                            + body)
    assert answer is not None and answer.status == 201, answer


async def test_client_disconnect_mid_body_logs_no_traceback(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = await live()
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(POST + b"Content-Length: 1000\r\n\r\n" + b'{"role": ')
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ok = await exchange(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok is not None and ok.status == 200
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) <= 1
