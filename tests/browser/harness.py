"""What the browser tests drive: a ``chatlog serve`` subprocess and its HTTP API.

A :class:`Server` runs on 127.0.0.1 with its own data dir and a free port; it
is stopped by its pid (SIGINT, then SIGKILL if it hangs) and can be restarted
on the same data dir and port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"

_AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
  }));
}"""


def serious_a11y_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core (vendored, injected into the page): the serious and critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(_AXE_RUN)
    return [v for v in found if v["impact"] in ("serious", "critical")]


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artefact under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # From the top: a sticky header would otherwise be drawn where the page was scrolled to.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    return path
