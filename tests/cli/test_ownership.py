"""One owner per data dir: real ``chatlog serve`` and CLI processes, killed by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from chatlog.eventstore import EmbeddedValkey
from chatlog.eventstore.owner import read_owner
from tests.helpers import eventually
from tests.http.serving import CHATLOG, Served, clean_env

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def data(short_tmp: Path) -> Path:
    return short_tmp / f"o{uuid.uuid4().hex[:6]}"


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(data_dir: Path, *args: str, **env: str) -> Served:
        s = Served(data_dir, *args, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def chatlog(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHATLOG, *args], capture_output=True, text=True, timeout=60,
                          env=clean_env(**env), cwd=cwd)


def valkeys_on(data_dir: Path) -> list[int]:
    """Pids of live processes working in ``<data_dir>/valkey`` (Valkey chdirs to its dir)."""
    want = (data_dir / "valkey").resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cwd == want and state != "Z":
            found.append(int(entry.name))
    return found


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_no_data_here_is_said_and_nothing_is_created(tmp_path: Path) -> None:
    for args in (["status"], ["append", "Blog-Project", "hello"]):
        line = one_line(chatlog(*args, cwd=tmp_path))
        assert "no chatlog data here" in line and "CHATLOG_DATA_DIR or --data-dir" in line
    assert list(tmp_path.iterdir()) == []


async def test_a_second_serve_refuses_naming_the_owner(serve, data: Path) -> None:
    first = serve(data)
    second = chatlog("serve", "--port", "0", "--data-dir", str(data))
    line = one_line(second)
    assert f"pid {first.proc.pid}" in line and first.url in line
    # The first one was not disturbed.
    async with aiohttp.ClientSession(first.url) as http:
        assert (await http.get("/readyz")).status == 200
    assert first.stop() == 0


async def test_cli_commands_use_the_running_servers_log(serve, data: Path) -> None:
    served = serve(data)
    owner = read_owner(data)
    assert owner is not None and owner.pid == served.proc.pid and owner.address == served.url
    # --data-dir after the subcommand: the server's log, not a private one.
    out = chatlog("append", "Blog-Project", "from the shell", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    appended = json.loads(out.stdout)
    async with aiohttp.ClientSession(served.url) as http:
        resp = await http.get("/v1/events")
        ids = [e["id"] for e in (await resp.json())["events"]]
    assert appended["message_id"] in ids
    assert valkeys_on(data) == [owner.valkey_pid]  # no second Valkey was started
    status = json.loads(chatlog("status", "--json", "--data-dir", str(data)).stdout)
    assert status["owner"]["pid"] == served.proc.pid
    assert status["owner"]["address"] == served.url
    assert status["owner"]["uptime_seconds"] >= 0
    assert status["url"] == owner.valkey_url
    human = chatlog("status", "--data-dir", str(data)).stdout
    assert f"chatlog serve pid {served.proc.pid} at {served.url}, up " in human
    assert served.stop() == 0
    assert read_owner(data) is None  # released on exit
    assert valkeys_on(data) == []


def test_without_a_server_safe_commands_run_a_private_valkey_and_others_say_so(
    serve, data: Path
) -> None:
    serve(data).stop()  # creates the data dir
    out = chatlog("append", "p", "x", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    status = json.loads(chatlog("status", "--json", "--data-dir", str(data)).stdout)
    assert status["owner"] is None and status["length"] == 1
    assert "no chatlog serve runs on this data dir" in chatlog(
        "status", "--data-dir", str(data)).stdout
    for args in (["worker"], ["tail", "--follow"]):
        line = one_line(chatlog(*args, "--data-dir", str(data)))
        assert f"no chatlog serve owns data dir {data}" in line
    assert valkeys_on(data) == []
    assert read_owner(data) is None


def test_a_killed_serves_lock_is_stale_and_its_valkey_goes_with_it(serve, data: Path) -> None:
    served = serve(data)
    owner = read_owner(data)
    assert owner is not None and owner.valkey_pid is not None
    os.kill(served.proc.pid, signal.SIGKILL)
    served.proc.wait()
    again = serve(data)  # the lock died with its holder
    assert read_owner(data).pid == again.proc.pid  # type: ignore[union-attr]
    assert valkeys_on(data) == [read_owner(data).valkey_pid]  # type: ignore[union-attr]
    assert again.stop() == 0


def test_an_orphaned_valkey_is_found_and_stopped(data: Path, serve) -> None:
    serve(data).stop()
    # A Valkey on the data dir with no owner holding the lock: what a killed
    # run leaves when its server outlives it.
    orphan = EmbeddedValkey(data / "valkey").start()
    try:
        pid = orphan.pid
        out = chatlog("status", "--json", "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
        assert f"stopped Valkey pid {pid}" in out.stderr
        assert pid not in valkeys_on(data)
        assert valkeys_on(data) == []
    finally:
        orphan.stop()


async def test_kill_9_of_migrate_then_rerun_leaves_no_valkey(
    serve, data: Path, valkey_factory: Callable[..., EmbeddedValkey]
) -> None:
    serve(data).stop()
    assert chatlog("append", "p", "x", "--data-dir", str(data)).returncode == 0
    # A target that accepts connections and never answers: migrate hangs in it.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen()
        port = blackhole.getsockname()[1]
        proc = subprocess.Popen([*CHATLOG, "migrate", "--to", f"redis://127.0.0.1:{port}",  # noqa: ASYNC220
                                 "--quiet", "--data-dir", str(data)],
                                env=clean_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            await eventually(lambda: (o := read_owner(data, wait=0)) is not None
                             and o.valkey_pid is not None, timeout=30,
                             what="migrate's private Valkey")
            assert len(valkeys_on(data)) == 1
        finally:
            proc.kill()
            proc.wait()
    await eventually(lambda: not valkeys_on(data), timeout=15,
                     what="the killed migrate's Valkey to stop")
    target = valkey_factory()
    rerun = chatlog("migrate", "--to", target.url, "--quiet", "--data-dir", str(data))
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["events"] == 1
    assert valkeys_on(data) == []


async def test_a_library_owned_valkey_is_not_taken_for_an_orphan(data: Path, serve) -> None:
    from chatlog.integrations._runtime import open_log
    from tests.helpers import message

    serve(data).stop()
    async with open_log(data) as (store, _):
        await store.append_one(message("Library", "t1", "before"))
        owner = read_owner(data)
        assert owner is not None and owner.command == "library"
        status = chatlog("status", "--data-dir", str(data))
        assert f"in use by chatlog library (pid {os.getpid()}" in one_line(status)
        await store.append_one(message("Library", "t1", "after"))  # its Valkey still runs
    assert read_owner(data) is None and valkeys_on(data) == []
