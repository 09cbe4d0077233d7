"""Issue 14 as a newcomer meets it: the README's walkthrough pasted into a shell against a
real ``chatlog serve``, appends from the CLI and imports counted in ``/metrics`` by type,
``build/`` ignored by git."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import eventually
from tests.http.serving import CHATLOG, Served, clean_env
from tests.http.test_metrics import value

ROOT = Path(__file__).parents[2]


def _shell_blocks(section: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(section)
    end = readme.index("\n## ", start + len(section))
    return re.findall(r"```sh\n(.*?)```", readme[start:end], re.DOTALL)


@pytest.fixture
def data(short_tmp: Path) -> Path:
    return short_tmp / f"w{uuid.uuid4().hex[:6]}"


@pytest.fixture
def served(data: Path) -> Iterator[Served]:
    s = Served(data)
    yield s
    s.stop()


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                    reason="needs curl and bash, as the README does")
def test_the_readme_walkthrough_pastes(served: Served, data: Path) -> None:
    curl_block, shell_block = _shell_blocks("## Use it")
    port = served.url.rsplit(":", 1)[1]
    # The one change: where this server listens, and an end to the endless stream.
    script = (curl_block.replace("localhost:8080", f"127.0.0.1:{port}")
              .replace("curl -N ", "curl -N --max-time 2 "))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env=clean_env())
    out = proc.stdout
    answer = json.loads(out.splitlines()[0])
    assert answer["project_name"] == "Blog-Project" and answer["thread_id"].startswith("thread-")
    # Each later curl got JSON, not a 400 about a placeholder.
    assert "Invalid char" not in out and '"status": 400' not in out and '"status":400' not in out
    assert out.count("Draft a post about event logs") >= 3  # threads, messages, replay
    assert "event: message.appended" in out  # the stream's frames name their type
    # The shell block, with the data dir of this server.
    shell = shell_block.replace(".venv/bin/chatlog", CHATLOG[0]).replace("./data", str(data))
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert proc.returncode == 0, proc.stderr
    appended = json.loads(proc.stdout.splitlines()[0])
    assert appended["project"] == answer["project"]  # the server's log, the same project
    status = proc.stdout
    assert f"chatlog serve pid {served.proc.pid}" in status  # the owner
    # Tables, not raw JSON, and positions in full even when piped.
    assert "[{" not in status and '{"' not in status.split("\n", 1)[1]
    assert appended["position"] in status and "…" not in status


async def test_appends_from_the_cli_and_imports_are_counted_by_type(
    served: Served, data: Path, tmp_path: Path
) -> None:

    def chatlog(*args: str) -> None:
        proc = subprocess.run([*CHATLOG, *args, "--data-dir", str(data)], capture_output=True,
                              text=True, timeout=60, env=clean_env())
        assert proc.returncode == 0, proc.stderr

    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("\n".join(json.dumps(
        {"project_id": "Old", "thread_id": "t-1", "role": "user", "content": f"old {i}",
         "created_at": f"2025-11-02T09:00:0{i}Z", "message_id": str(i)}) for i in range(3)))
    chatlog("append", "Blog-Project", "from the shell")
    chatlog("import", str(legacy))

    async def counted() -> float | None:
        async with aiohttp.ClientSession(served.url) as http:
            text = await (await http.get("/metrics")).text()
        n = value(text, 'chatlog_events_total{type="message.appended"}')
        return n if n == 4 else None

    await eventually(counted, timeout=30, what="the CLI append and the 3 imports counted")


def test_build_is_ignored_by_git() -> None:
    assert "build/" in (ROOT / ".gitignore").read_text().split()


def test_without_a_server_a_command_says_it_runs_on_a_private_valkey(data: Path) -> None:
    """README: "a command uses the running `chatlog serve`'s log, and says so when none runs"."""
    Served(data).stop()  # creates the data dir
    proc = subprocess.run([*CHATLOG, "append", "Blog-Project", "hello", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"] == 1
    assert proc.stderr.strip() == (f"no chatlog serve owns data dir {data}: append runs on a "
                                   "private Valkey, stopped when it ends")
