"""Property-based run of ``/openapi.json`` against a real ``chatlog serve``: no 500, no
answer outside the documented statuses, media types and schemas. Bounded: a few
examples per operation."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from chatlog.http import endpoints
from chatlog.http.openapi import build, with_document
from tests.http.serving import Served

# The document is generated from the same declarations the server routes from.
ENDPOINTS = with_document(endpoints(), title="chatlog", version="test")
schema = schemathesis.openapi.from_dict(build(ENDPOINTS, title="chatlog", version="test"))
# The SSE stream never ends by design; it is covered by tests/http/test_events.py.
schema = schema.exclude(path="/v1/events/stream")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(short_tmp: Path) -> Iterator[str]:
    # Short header and body timeouts: a request the fuzzer left incomplete is closed
    # or answered 408 soon, not after the defaults.
    server = Served(short_tmp / f"fz{uuid.uuid4().hex[:6]}", CHATLOG_HEADER_TIMEOUT="2",
                    CHATLOG_BODY_TIMEOUT="2")
    yield server.url
    code = server.stop()
    assert "unexpected error" not in server.stderr, server.stderr[-2000:]
    assert code == 0


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_openapi_operations_never_fail_or_break_the_schema(case, served: str) -> None:
    if case.query and "timeout" in case.query:
        case.query["timeout"] = 0.05  # long-polls: keep the run bounded
    if case.method.upper() == "DELETE":
        # An erasure waits up to ``wait`` s (30 by default) for the physical erasure
        # before it answers 202; on a loaded machine that outlasted the 15 s below.
        wait = (case.query or {}).get("wait")
        if wait is None or (isinstance(wait, int | float) and wait > 1):
            case.query = {**(case.query or {}), "wait": 1}
    case.call_and_validate(base_url=served, checks=CHECKS, timeout=15)


def test_an_overlong_url_is_a_414_problem(served: str) -> None:
    """aiohttp's own line limit would answer a plain-text 400; chatlog answers problem+json."""
    import json
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{served}/v1/events?types={'x' * 20_000}", timeout=10)
    assert err.value.code == 414
    assert err.value.headers["Content-Type"].startswith("application/problem+json")
    assert "at most 8192" in json.loads(err.value.read())["detail"]


# -- below the schema: what aiohttp's parser sees -------------------------------------

_VALID_HEAD = [
    b"POST /v1/projects/fuzz/messages HTTP/1.1",
    b"Host: 127.0.0.1",
    b"Content-Type: application/json",
    b"Connection: close",
]
_VALID_BODY = b'{"role": "user", "content": "fuzz"}'
_FRAMING = st.sampled_from([
    b"Content-Length: -1", b"Content-Length: 1, 2", b"Content-Length: 99999999999999999999",
    b"Content-Length: 0x10", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked, identity", b"Content-Encoding: gzip",
    b"Content-Encoding: deflate", b"Content-Encoding: br", b"Content-Encoding: zstd",
    b"Content-Encoding: x-unknown", b"Expect: 100-continue", b"Connection: upgrade",
    b"Upgrade: h2c", b"X-Folded: a\r\n b", b"Host: a\x00b", b"Bad Header: x",
    b"NoColon", b": empty-name",
])


@st.composite
def _raw_requests(draw: st.DrawFn) -> bytes:
    """A valid append with some of its framing replaced or corrupted."""
    head = list(_VALID_HEAD)
    if draw(st.booleans()):  # corrupt the request line
        line = bytearray(head[0])
        for _ in range(draw(st.integers(1, 3))):
            line[draw(st.integers(0, len(line) - 1))] = draw(st.integers(0, 255))
        head[0] = bytes(line)
    head[4:4] = draw(st.lists(_FRAMING, max_size=3))
    body = draw(st.sampled_from([_VALID_BODY, b"", b"zz\r\nhello\r\n0\r\n\r\n",
                                 b"5\r\nhello\r\nX\r\n\r\n", draw(st.binary(max_size=64))]))
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding"))
               for h in head[4:]):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _answer_or_close(url: str, raw: bytes) -> bytes:
    """All the server sends before it closes (10 s at most: a hang fails the test)."""
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.slow
@given(raw=_raw_requests())
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_parser_level_corruptions_are_problem_json_or_a_close(raw: bytes, served: str) -> None:
    """Whatever the framing, the answer is a success, a problem+json 4xx, or a close;
    never text/plain, never a 5xx, never a hang."""
    data = _answer_or_close(served, raw)
    for answer in re.split(rb"HTTP/1\.[01] ", data)[1:]:
        status = int(answer[:3])
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert status < 500, (raw, data[:500])
        if status >= 400:
            assert b"content-type: application/problem+json" in head, (raw, data[:500])
