"""``chatlog serve`` as a real process on loopback: the seed's tests, clean stop, refusals."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.http.conftest import read_sse
from tests.http.serving import CHATLOG, Served, clean_env


@pytest.fixture
def serve(short_tmp: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(data_dir: Path | None = None, *args: str, **env: str) -> Served:
        s = Served(data_dir or short_tmp / f"s{uuid.uuid4().hex[:6]}", *args, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


async def test_seed_tests_against_a_real_chatlog_serve(serve, short_tmp) -> None:
    data = short_tmp / f"s{uuid.uuid4().hex[:6]}"
    served = serve(data)
    assert served.url.startswith("http://127.0.0.1:")
    assert "valkey: unix://" in served.banner
    async with aiohttp.ClientSession(served.url) as http:
        # Test 3: thread_id null -> generated; the next message joins it.
        resp = await http.post("/v1/projects/Blog-Project/messages",
                               json={"thread_id": None, "role": "user", "content": "first"})
        assert resp.status == 201
        first = await resp.json()
        assert first["thread_id"].startswith("thread-")
        resp = await http.post("/v1/projects/blog-project/messages",
                               json={"thread_id": first["thread_id"], "role": "assistant",
                                     "content": "second"})
        second = await resp.json()
        # Test 2: the lowercase spelling reads the same thread.
        resp = await http.get(f"/v1/projects/BLOG-PROJECT/threads/{first['thread_id']}/messages",
                              params={"min_position": second["position"]})
        assert [m["content"] for m in (await resp.json())["messages"]] == ["first", "second"]
        assert (await http.get("/readyz")).status == 200
        assert "chatlog_appends_total" in await (await http.get("/metrics")).text()
        # An open SSE stream does not hold the shutdown up: it is ended cleanly.
        stream = await http.get("/v1/events/stream")
        assert (await read_sse(stream, 2))[1][1]["id"] == second["message_id"]
        assert served.stop() == 0, served.stderr
        assert await stream.content.read() == b""  # ended, not hanging
    assert "chatlog stopped" in served.stderr
    assert "Traceback" not in served.stderr
    assert not (data / "valkey" / "valkey.pid").exists()  # Valkey stopped with it

    # Test 4: after a restart the old conversation is still there.
    again = serve(data)
    async with aiohttp.ClientSession(again.url) as http:
        resp = await http.get("/v1/projects/blog-project/threads")
        threads = (await resp.json())["threads"]
        assert [t["thread_id"] for t in threads] == [first["thread_id"]]
        assert threads[0]["message_count"] == 2
    assert again.stop() == 0


def test_non_loopback_bind_without_tokens_is_refused(short_tmp) -> None:
    proc = subprocess.run(
        [*CHATLOG, "--data-dir", str(short_tmp / "refused"), "serve", "--host", "0.0.0.0"],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "refusing to listen on 0.0.0.0" in lines[0] and "CHATLOG_TOKENS_FILE" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (short_tmp / "refused" / "valkey").exists()  # nothing was started


def test_serve_with_a_broken_tokens_file_says_so_in_one_line(short_tmp, tmp_path) -> None:
    bad = tmp_path / "tokens.json"
    bad.write_text(json.dumps({"tokens": [{"token": "x"}]}))
    proc = subprocess.run(
        [*CHATLOG, "--data-dir", str(short_tmp / "badtokens"), "serve", "--host", "0.0.0.0",
         "--tokens-file", str(bad)],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "tokens file" in proc.stderr


def test_port_in_use_is_one_clear_line(short_tmp) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*CHATLOG, "--data-dir", str(short_tmp / "inuse"), "serve", "--port", str(port)],
            capture_output=True, text=True, env=clean_env(), timeout=60,
        )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # It failed before starting anything: no Valkey, no orchestrator, no projector.
    assert not (short_tmp / "inuse" / "valkey").exists()
    assert not (short_tmp / "inuse" / "readmodel.sqlite").exists()
