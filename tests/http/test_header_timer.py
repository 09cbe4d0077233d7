"""The header timeout with one timer per connection kept across requests (issue 18: a
timer made and cancelled per request was a measurable part of an append's CPU): the
head of a later request on a kept-alive connection is still timed, from when its
first bytes came, and a connection answering requests is not cut."""

from __future__ import annotations

import asyncio
import contextlib

from tests.http.live import Live

HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def test_a_stalled_head_after_answered_requests_is_closed(live: Live) -> None:
    host, port = await live(header_timeout=0.3, keepalive_timeout=30)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(3):  # each head disarms the timer; the answers re-arm it
            writer.write(HEAD)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never completed
        await writer.drain()
        # Closed by the header timeout (the keep-alive timeout is 30 s): EOF.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_requests_keep_being_answered_across_many_timeouts(live: Live) -> None:
    host, port = await live(header_timeout=0.05, keepalive_timeout=30)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.5  # ten header timeouts of complete requests, back to back
        answered = 0
        while loop.time() < until:
            writer.write(HEAD)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
            answered += 1
        assert answered > 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
