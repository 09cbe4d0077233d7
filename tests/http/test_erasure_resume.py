"""Resuming interrupted erasures when serve starts while Valkey is down (issue 14): one
warning line, no traceback, and the erasure completes once Valkey is back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chatlog.eventstore import EventStore
from chatlog.http import Services, create_app
from chatlog.http.app import build_services
from chatlog.identity import normalize_project_id
from chatlog.settings import Settings
from tests.helpers import eventually, message

pytestmark = pytest.mark.slow


async def test_erasures_resume_once_valkey_is_back_after_one_warning(
    valkey_factory, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = valkey_factory()
    settings = Settings(redis_url=server.url, data_dir=tmp_path / "data", key_prefix=key_prefix,
                        hot_events=0, hot_seconds=0, hot_bytes=0)
    settings.data_dir.mkdir()
    store = await EventStore.open(server.url, prefix=key_prefix)
    client = None
    try:
        await store.append_one(message("Blog", "t1", "forget me"))
        await store.append_one(message("Blog", "t2", "keep"))
        services = build_services(settings, store)
        assert services.eraser is not None
        blog = normalize_project_id("Blog")
        # An erasure recorded but not run: what a crash leaves for serve to resume.
        report = await services.eraser.request(blog.key, blog.display, "t1")
        server.stop()  # Valkey is down when the resume task runs
        caplog.set_level(logging.INFO, logger="chatlog.http.app")
        # Only the eraser: the orchestrator's start would wait for Valkey (its scan
        # retries), so in serve Valkey must die just after it; here it is down from
        # the start of the resume task.
        app = create_app(settings, store, services=Services(eraser=services.eraser))
        client = TestClient(TestServer(app))
        await client.start_server()

        def warned() -> list[logging.LogRecord]:
            return [r for r in caplog.records
                    if r.name == "chatlog.http.app" and r.levelno >= logging.WARNING]

        await eventually(warned, timeout=20, what="the resume task to warn")
        valkey_factory(data_dir=server.dir)  # back, on the same data dir and socket

        await eventually(lambda: "resumed erasure" in caplog.text, timeout=60,
                         what="the erasure to be resumed once Valkey is back")
        done = await services.eraser.status(report.erasure_id)
        assert done is not None and done.step == "done"
        assert await services.eraser.pending() == []
        (record,) = warned()  # one line while it waited, not one per attempt
        assert record.levelno == logging.WARNING
        assert record.exc_info is None and record.exc_text is None  # no traceback
        assert "\n" not in record.getMessage()
        assert "erasure" in record.getMessage()
    finally:
        if client is not None:
            await client.close()
        await store.close()
