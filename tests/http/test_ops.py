"""Health, readiness (projection lag) and metrics."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from chatlog.http import create_app
from chatlog.http.app import build_services
from chatlog.settings import Settings
from tests.helpers import eventually, message
from tests.http.conftest import post_message, read_sse


async def test_metrics_count_appends_errors_and_subscribers(client) -> None:
    sent = await post_message(client, "M", "one")
    # the projection has it before the lag is read (read-your-writes)
    caught_up = await client.get(f"/v1/projects/M/threads?min_position={sent['position']}")
    assert caught_up.status == 200
    await client.post("/v1/projects/M/messages", data=b"{")
    stream = await client.get("/v1/events/stream")
    await read_sse(stream, 1)
    text = await (await client.get("/metrics")).text()
    assert 'chatlog_appends_total{outcome="created"} 1.0' in text
    assert 'chatlog_http_errors_total{status="400"} 1.0' in text
    assert 'chatlog_http_responses_total{status="201"} 1.0' in text
    assert 'chatlog_http_responses_total{status="200"} 1.0' in text
    assert "chatlog_sse_subscribers 1.0" in text
    assert "chatlog_projection_lag_events 0.0" in text
    stream.close()


async def test_not_ready_while_the_read_models_are_far_behind(store, tmp_path) -> None:
    # 1,200 events in the log before the app starts; its projector is not running yet.
    for i in range(12):
        await store.append([message("Lag", f"thread-{i}", f"m{j}") for j in range(100)])
    settings = Settings(redis_url=store.url, key_prefix=store.keys.prefix, data_dir=tmp_path)
    services = build_services(settings, store)
    app = create_app(settings, store, services=services, manage_services=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        doc = await resp.json()
        assert doc["ready"] is False and doc["store"] == "ok"
        assert doc["projection"]["events_behind"] == 1200
        # Once the projector has caught up, it is ready.
        await services.projector.start()
        try:

            async def ready() -> dict | None:
                resp = await client.get("/readyz")
                doc = await resp.json()
                caught_up = resp.status == 200 and doc["projection"]["events_behind"] == 0
                return doc if caught_up else None

            doc = await eventually(ready, what="/readyz answering 200, caught up")
            assert isinstance(doc, dict) and "catching_up" not in doc["projection"]
        finally:
            await services.projector.stop()
            services.read_model.close()


class _Failing:
    """A projection whose every batch fails: the projector retries, and says why."""

    name = "failing"
    event_types = frozenset({"message.appended"})

    def create_schema(self, conn: object) -> None:
        pass

    def create_indexes(self, conn: object) -> None:
        pass

    def apply(self, conn: object, events: object) -> None:
        raise RuntimeError("this projection cannot apply anything")


class _Slow:
    """A projection whose batches wait for ``go``: the projector stays in its catch-up."""

    name = "slow"
    event_types = frozenset({"message.appended"})

    def __init__(self) -> None:
        import threading

        self.go = threading.Event()

    def create_schema(self, conn: object) -> None:
        pass

    def create_indexes(self, conn: object) -> None:
        pass

    def apply(self, conn: object, events: object) -> None:
        self.go.wait(30)


async def test_ready_during_the_start_up_catch_up_which_it_shows(store, tmp_path) -> None:
    """A server on a log far ahead of its read model (a fresh data dir) is ready at once;
    /readyz says it is catching up and how far behind it is."""
    from chatlog.http import Services
    from chatlog.projections.projector import Projector

    for i in range(12):
        await store.append([message("Far", f"thread-{i}", f"m{j}") for j in range(100)])
    settings = Settings(redis_url=store.url, key_prefix=store.keys.prefix, data_dir=tmp_path)
    slow = _Slow()
    projector = Projector(store, settings.sqlite_path, [slow], batch_size=100)
    app = create_app(settings, store, services=Services(projector=projector))
    try:
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/readyz")
            doc = await resp.json()
            assert resp.status == 200, doc
            assert doc["projection"]["catching_up"] is True
            assert doc["projection"]["events_behind"] > 1000
            slow.go.set()

            async def caught_up() -> dict | None:
                resp = await client.get("/readyz")
                doc = await resp.json()
                return doc if resp.status == 200 and "catching_up" not in doc[
                    "projection"] else None

            doc = await eventually(caught_up, what="the catch-up to end")
            assert isinstance(doc, dict) and doc["projection"]["events_behind"] == 0
    finally:
        slow.go.set()


async def test_readiness_shows_the_projectors_last_error(store, tmp_path) -> None:
    from chatlog.http import Services
    from chatlog.projections.projector import Projector


    await store.append([message("Broken", "thread-1", "hello")])
    settings = Settings(redis_url=store.url, key_prefix=store.keys.prefix, data_dir=tmp_path)
    projector = Projector(store, settings.sqlite_path, [_Failing()], retry_delay=0.05)
    app = create_app(settings, store, services=Services(projector=projector))
    async with TestClient(TestServer(app)) as client:

        async def failing() -> dict | None:
            doc = await (await client.get("/readyz")).json()
            return doc if "last_error" in doc["projection"] else None

        doc = await eventually(failing, what="/readyz naming the projector's error")
        assert isinstance(doc, dict)
        assert doc["projection"]["last_error"] == (
            "RuntimeError: this projection cannot apply anything")
        assert doc["projection"]["events_behind"] == 1  # it retries from its checkpoint


async def test_metrics_count_the_blocked_workflow_waits(client) -> None:
    from chatlog.http import STATE
    from chatlog.identity import normalize_project_id

    base = "/v1/projects/Waits/workflows"
    wf = await (await client.post(base, json={})).json()
    poll = asyncio.ensure_future(client.get(
        f"{base}/{wf['workflow_id']}", params={"wait_for": "running", "timeout": "20"}))
    orchestrator = client.app[STATE].services.orchestrator
    await asyncio.wait_for(
        orchestrator.until_blocked(normalize_project_id("Waits"), wf["workflow_id"]), 10)
    assert "chatlog_workflow_waits 1.0" in await (await client.get("/metrics")).text()
    await client.post(f"{base}/{wf['workflow_id']}/start", json={})
    assert (await (await poll).json())["state"] == "running"
    assert "chatlog_workflow_waits 0.0" in await (await client.get("/metrics")).text()


async def test_readiness_shows_the_orchestrator_and_a_failed_start(store, tmp_path) -> None:
    """The orchestrator's start-up catch-up runs while the server answers (/readyz shows
    ``orchestrator.catching_up``); a start that failed in the background is not ready."""
    settings = Settings(redis_url=store.url, key_prefix=store.keys.prefix, data_dir=tmp_path)
    services = build_services(settings, store)
    app = create_app(settings, store, services=services, manage_services=False)
    async with TestClient(TestServer(app)) as client:
        doc = await (await client.get("/readyz")).json()
        assert doc["orchestrator"] == {"catching_up": False}
        services.orchestrator.problem = "the orchestrator's start failed: boom"
        resp = await client.get("/readyz")
        doc = await resp.json()
        assert resp.status == 503 and doc["ready"] is False
        assert doc["orchestrator"]["problem"].endswith("boom")
    services.read_model.close()
