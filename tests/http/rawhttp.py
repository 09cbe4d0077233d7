"""Raw HTTP/1.1 over a socket, for requests no well-behaved client would send."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(data: bytes) -> RawAnswer | None:
    """The first response in ``data`` (None when there is none)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return RawAnswer(status, headers, body[:length])


async def exchange(host: str, port: int, *parts: bytes, timeout: float = 10.0,
                   pause: float = 0.0) -> RawAnswer | None:
    """Send ``parts`` (``pause`` s apart) and read until the server closes or answers fully.

    None when the server closed without an answer; raises TimeoutError when it
    neither answered nor closed within ``timeout``.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            try:
                await writer.drain()
            except ConnectionError:
                break
        data = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await reader.read(65536)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    break
                data += chunk
                answer = parse_answer(data)
                if answer is not None and len(answer.body) >= int(
                    answer.headers.get("content-length", "-1")
                ) >= 0:
                    break
        return parse_answer(data)
    finally:
        writer.close()
