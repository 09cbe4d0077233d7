"""A body that stops arriving is answered 408 (problem+json) after the body timeout;
one that came whole with its head is read without arming that timer."""

from __future__ import annotations

from tests.http.live import Live
from tests.http.rawhttp import exchange

HEAD = (b"POST /v1/projects/p/messages HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
BODY = b'{"role": "user", "content": "hello"}'


async def test_a_body_that_stops_arriving_is_a_408_and_a_whole_one_is_appended(
    live: Live,
) -> None:
    host, port = await live(body_timeout=0.3)
    stalled = await exchange(host, port, HEAD % (len(BODY) + 10) + BODY, timeout=20)
    assert stalled is not None and stalled.status == 408
    assert stalled.content_type == "application/problem+json"
    assert "did not arrive within 0.3 s" in stalled.json()["detail"]
    whole = await exchange(host, port, HEAD % len(BODY) + BODY, timeout=20)
    assert whole is not None and whole.status == 201, whole
    assert whole.json()["version"] == 1
