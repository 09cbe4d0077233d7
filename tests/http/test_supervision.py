"""``chatlog serve`` supervises its embedded Valkey: real processes, SIGKILL by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import uuid
from pathlib import Path

import aiohttp
import pytest

from chatlog.eventstore.embedded import valkey_binary
from chatlog.eventstore.owner import read_owner
from tests.helpers import eventually
from tests.http.serving import Served

pytestmark = pytest.mark.slow


async def test_sigkill_of_valkey_under_append_load_loses_nothing_and_resumes(
    short_tmp: Path,
) -> None:
    data = short_tmp / f"sv{uuid.uuid4().hex[:6]}"
    served = Served(data)
    try:
        owner = read_owner(data)
        assert owner is not None and owner.valkey_pid is not None
        acked: list[str] = []
        after_kill: list[str] = []
        statuses: set[int] = set()
        killed = asyncio.Event()
        done = asyncio.Event()

        async def writer(http: aiohttp.ClientSession, n: int) -> None:
            while not done.is_set():
                eid = str(uuid.uuid4())
                try:
                    resp = await http.post(
                        "/v1/projects/Load/messages",
                        json={"thread_id": f"t{n}", "role": "user", "content": eid,
                              "event_id": eid})
                except aiohttp.ClientError:
                    continue
                statuses.add(resp.status)
                # 200: the store resent it after the restart and found it there (duplicate).
                if resp.status in (200, 201):
                    acked.append(eid)
                    if killed.is_set():
                        after_kill.append(eid)
                resp.release()

        async with aiohttp.ClientSession(served.url) as http:
            writers = [asyncio.create_task(writer(http, n)) for n in range(4)]
            try:
                await eventually(lambda: len(acked) >= 40, timeout=30, what="appends before")
                os.kill(owner.valkey_pid, signal.SIGKILL)
                killed.set()
                await eventually(lambda: len(after_kill) >= 20, timeout=30,
                                 what="appends to succeed again after the restart")
            finally:
                done.set()
                await asyncio.gather(*writers)
            if not statuses <= {200, 201, 503, 504}:  # with the server's log, which says why
                served.stop()
                raise AssertionError(f"answers {sorted(statuses)}; serve's log ends with:\n"
                                     f"{served.stderr[-6000:]}")
            # Every acknowledged event is in the log.
            seen: set[str] = set()
            params = {"limit": "1000"}
            while True:
                page = await (await http.get("/v1/events", params=params)).json()
                seen.update(e["id"] for e in page["events"])
                if not page["has_more"]:
                    break
                params["after"] = page["cursor"]
            assert set(acked) <= seen, f"{len(set(acked) - seen)} acknowledged events lost"
            metrics = await (await http.get("/metrics")).text()
            assert "chatlog_valkey_restarts_total 1.0" in metrics
        restarted = read_owner(data)
        assert restarted is not None and restarted.valkey_pid not in (None, owner.valkey_pid)
        assert served.stop() == 0
        assert "embedded Valkey restarted" in served.stderr
    finally:
        served.stop()


async def test_serve_exits_non_zero_when_valkey_cannot_be_restarted(short_tmp: Path) -> None:
    data = short_tmp / f"sx{uuid.uuid4().hex[:6]}"
    marker = short_tmp / f"ok{uuid.uuid4().hex[:6]}"
    marker.touch()
    wrapper = short_tmp / f"vk{uuid.uuid4().hex[:6]}.sh"
    # Starts the real server while the marker exists; fails once it is gone.
    wrapper.write_text(f'#!/bin/sh\n[ -e "{marker}" ] || exit 3\nexec "{valkey_binary()}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    served = Served(data, CHATLOG_VALKEY_BINARY=str(wrapper), CHATLOG_VALKEY_MAX_RESTARTS="2")
    try:
        owner = read_owner(data)
        assert owner is not None and owner.valkey_pid is not None
        marker.unlink()
        os.kill(owner.valkey_pid, signal.SIGKILL)
        await eventually(lambda: served.proc.poll() is not None, timeout=30,
                         what="serve to give up")
        assert served.stop() == 1
        last = served.stderr.strip().splitlines()[-1]
        assert "2 restarts failed" in last and "exited with code 3" in last, served.stderr
        assert last.startswith("Error: ")  # one line, not a traceback
        assert read_owner(data) is None
    finally:
        served.stop()
