"""Bounded connections (issue 15 #2): with the open-file limit at 256, 300 idle and
slowloris connections do not stop a well-behaved client from being served, and a
Server-Sent Events stream is not cut while its keep-alives flow."""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from chatlog.http._server import AcceptErrors
from tests.helpers import eventually
from tests.http.conftest import read_sse
from tests.http.serving import CHATLOG, clean_env

FILE_LIMIT = 256


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture
def limited_serve(short_tmp: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``chatlog serve`` under ``ulimit -n 256``, short connection timeouts."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*CHATLOG, "--data-dir", str(short_tmp / f"c{uuid.uuid4().hex[:6]}"), "serve",
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_limit_files,
        env=clean_env(CHATLOG_HEADER_TIMEOUT="1", CHATLOG_KEEPALIVE_TIMEOUT="1",
                      CHATLOG_SSE_KEEPALIVE="0.2"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    url = line.split("listening on ", 1)[1].split(" ", 1)[0]
    yield url, proc
    proc.terminate()
    proc.stdout.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err.seek(0)
    log = err.read().decode(errors="replace")
    err.close()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("\n") < 100, log[-3000:]  # rate-limited, not a line per connection


async def _attacker(host: str, port: int, slow: bool, opened: asyncio.Event) -> None:
    """Send nothing (or partial headers, a byte now and then); end when the server closes."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        opened.set()
        return
    opened.set()
    try:
        if slow:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while await _read_or_drip(reader, writer, slow):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _read_or_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        slow: bool) -> bool:
    """False once the server has closed the connection."""
    try:
        return bool(await asyncio.wait_for(reader.read(65536), 0.3))
    except TimeoutError:
        if slow:
            writer.write(b"a")
        return True


async def test_idle_and_slowloris_connections_do_not_lock_out_a_good_client(
    limited_serve: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = limited_serve
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with aiohttp.ClientSession(url) as http:
        # An SSE subscriber, open before the attack and through it.
        sse = await http.get("/v1/events/stream", timeout=aiohttp.ClientTimeout(total=None))
        assert sse.status == 200
        attackers = []
        for i in range(300):
            opened = asyncio.Event()
            attackers.append(asyncio.create_task(_attacker(host, int(port), bool(i % 2), opened)))
            await opened.wait()
        try:
            async def served() -> bool:
                started = time.monotonic()
                async with aiohttp.ClientSession(url) as fresh:
                    async with fresh.get("/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        return r.status == 200 and time.monotonic() - started <= 2.0
            assert await served(), "a well-behaved client was not served within 2 s"

            await eventually(lambda: all(t.done() for t in attackers), timeout=30, interval=0.2,
                             what="the server closing idle and slowloris connections")
            # The SSE stream outlived those timeouts: it still delivers live events.
            async with http.post("/v1/projects/P/messages",
                                 json={"role": "u", "content": "after the attack"}) as r:
                assert r.status == 201
            events = await read_sse(sse, 1)
            assert events[0][1]["data"]["content"] == "after the attack"
        finally:
            for t in attackers:
                t.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)
            sse.close()


async def test_failed_accepts_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    handler = AcceptErrors(loop, interval=3600)
    handler.install()
    try:
        caplog.set_level(logging.WARNING)
        for _ in range(500):
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(24, "Too many open files"),
            })
    finally:
        handler.uninstall()
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info
    assert handler.count == 500
