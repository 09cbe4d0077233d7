"""Fixtures for the browser tests: a real ``chatlog serve`` and Debian's headless Chromium.

Each server runs as a subprocess on 127.0.0.1 with its own data dir and a free
port; it is stopped by its pid at teardown (and may be restarted on the same
data dir and port in between). The browser is the system ``chromium`` driven
by Playwright's sync API; these tests are plain sync tests, so no event loop
is running while Playwright drives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_DEADLINE = 40.0  # seconds a server may take to answer /readyz
STOP_DEADLINE = 20.0


def chromium_executable() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def chatlog_command() -> list[str]:
    script = Path(sys.executable).parent / "chatlog"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from chatlog.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Server:
    """One ``chatlog serve`` subprocess: start, stop (by pid), restart on the same port."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
        env.update({
            "CHATLOG_DATA_DIR": str(self.data_dir), "CHATLOG_HOST": "127.0.0.1",
            "CHATLOG_PORT": str(self.port), **self.env,
        })
        return env

    def start(self) -> Server:
        assert self.proc is None, "already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*chatlog_command(), "serve"], env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.data_dir.parent,
        )
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chatlog serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chatlog serve not ready in {START_DEADLINE} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Ctrl-C (SIGINT) by pid, then SIGKILL if it does not stop in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- the HTTP API, for setting up what the browser then looks at ---------------

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(exc.code, parsed) from None
        return json.loads(raw) if raw else None

    def cli(self, *args: str) -> str:
        """Run a ``chatlog`` command on this server's data dir (embedded Valkey)."""
        out = subprocess.run(
            [*chatlog_command(), *args], env=self._env(), capture_output=True, timeout=60,
            cwd=self.data_dir.parent, check=False,
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        return out.stdout.decode()


@pytest.fixture(scope="module")
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start ``chatlog serve`` processes (own data dir, free port); stop them at teardown."""
    started: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="clb-"))

    def start(**env: str) -> Server:
        server = Server(tmp / f"s{len(started)}", free_port(), env)
        server.data_dir.mkdir(parents=True)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_executable()
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; "
                    "dev.py installs it when it runs as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; JavaScript errors on the page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.set_default_timeout(20_000)
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
