"""``chatlog serve`` on its default loop (uvloop where installed): SIGTERM answers a
workflow long-poll ("not yet") and ends an SSE stream, stops the embedded Valkey
and exits 0."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import eventually
from tests.http.conftest import read_sse
from tests.http.serving import Served


async def test_sigterm_answers_long_polls_ends_streams_and_stops_valkey(short_tmp: Path) -> None:
    pytest.importorskip("uvloop")
    data = short_tmp / f"u{uuid.uuid4().hex[:6]}"
    served = Served(data)
    valkey = int((data / "valkey" / "valkey.pid").read_text())
    try:
        async with aiohttp.ClientSession(served.url) as http:
            async with http.post("/v1/projects/P/workflows", json={}) as resp:
                assert resp.status == 201, await resp.text()
                workflow = (await resp.json())["workflow_id"]

            async def long_poll() -> tuple[int, object]:
                async with http.get(f"/v1/projects/P/workflows/{workflow}",
                                    params={"wait_for": "completed", "timeout": "60"}) as r:
                    return r.status, (await r.json()).get("reached")

            poll = asyncio.create_task(long_poll())
            stream = await http.get("/v1/events/stream")
            assert len(await read_sse(stream, 1)) == 1

            async def polling() -> bool:
                async with http.get("/metrics") as r:
                    return "chatlog_workflow_long_polls 1.0" in await r.text()

            await eventually(polling, what="the long-poll waiting")
            assert await asyncio.to_thread(served.stop) == 0, served.stderr
            assert await stream.content.read() == b""  # ended, not hanging
            # answered "not yet" at shutdown, as at its timeout (it used to be held for
            # twice aiohttp's shutdown timeout, 10 s, then cut: the client saw the
            # connection dropped, or refused when it retried)
            assert await poll == (200, False)
    finally:
        served.stop()
    assert "event loop: uvloop" in served.stderr
    assert "Traceback" not in served.stderr and "chatlog stopped" in served.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(valkey, 0)
