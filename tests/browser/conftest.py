"""Fixtures for the browser tests: real ``chatlog serve`` processes and Debian's headless Chromium.

The browser is the system ``chromium`` driven by Playwright's sync API; the
tests are plain sync tests, so no event loop is running while Playwright
drives it. Servers are stopped by pid at teardown.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import CHROMIUM_ARGS, Server, chromium_executable, free_port


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
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def expected_console_errors() -> list[str]:
    """Substrings of browser console errors a test expects (a refused request, say)."""
    return []


@pytest.fixture
def page(browser: Any, expected_console_errors: list[str]) -> Iterator[Any]:
    """A fresh browser context and page; JavaScript errors and console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    p.on("console", on_console)
    p.set_default_timeout(20_000)
    yield p
    context.close()
    unexpected = [e for e in errors if not any(x in e for x in expected_console_errors)]
    assert not unexpected, f"errors in the browser console: {unexpected}"
