"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from chatlog.events import WORKFLOW_STATES
from chatlog.eventstore import EventStore
from chatlog.eventstore.connection import text
from chatlog.http._routing import Endpoint, json_response
from chatlog.http._state import AppState, state
from chatlog.http.models import Health, Readiness
from chatlog.orchestrator.jobs import GROUP as JOB_GROUP

#: Not ready while the read models are more than this many events behind.
READY_MAX_LAG = 1000


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response(Health(status="ok"))


def lag_events(lag: dict[str, Any]) -> int | None:
    """The number of events the read models are behind, from a lag report."""
    value = lag.get("events_behind")
    return value if isinstance(value, int) else None


async def projection_lag(st: AppState) -> dict[str, Any] | None:
    projector = st.services.projector
    if projector is None:
        return None
    return (await projector.lag()).model_dump(mode="json")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: Redis answers and the read models are not far behind (once they have
    caught up since start: during the start-up catch-up it is ready, and says
    ``catching_up`` with the events still behind)."""
    st = state(request)
    ready = True
    store_status = "ok"
    try:
        async with asyncio.timeout(2.0):
            await st.store.heads()
    except Exception as exc:
        ready = False
        store_status = f"unavailable: {exc.__class__.__name__}"
    projection: dict[str, Any] = {}
    if store_status == "ok" and st.services.projector is not None:
        try:
            async with asyncio.timeout(2.0):
                projection = await projection_lag(st) or {}
        except Exception as exc:
            projection = {"error": f"{exc.__class__.__name__}: {exc}"}
            ready = False
        behind = lag_events(projection)
        if behind is not None:
            st.metrics.projection_lag.set(behind)
            if behind and not getattr(st.services.projector, "caught_up_once", False):
                # Start-up catch-up (a fresh data dir, a read model far behind) goes on in
                # the background: appends, replay and waits work; queries answer what the
                # read model has (min_position waits for an append's position).
                projection["catching_up"] = True
            elif behind > READY_MAX_LAG:
                ready = False
        if not st.services.projector.running:
            ready = False
            projection["running"] = False
        if st.services.projector.last_error is not None:
            projection["last_error"] = st.services.projector.last_error
        problem = st.services.projector.problem
        if problem:  # a batch that keeps failing, or a repair in progress
            ready = False
            projection["problem"] = problem
        projection["batch_failures"] = st.services.projector.failures_total
        projection["repairs"] = st.services.projector.repairs
        if st.services.projector.last_repair is not None:
            projection["last_repair"] = st.services.projector.last_repair
    elif st.services.projector is None:
        projection = {"running": False, "detail": "no projector in this process"}
    orchestrator: dict[str, Any] = {}
    if st.services.orchestrator is not None:
        # Its start-up catch-up goes on in the background, like the projector's: waits
        # are answered once it reaches the present; a failed start is not ready.
        orchestrator["catching_up"] = st.services.orchestrator.catching_up
        if st.services.orchestrator.problem:
            ready = False
            orchestrator["problem"] = st.services.orchestrator.problem
    answer = Readiness(ready=ready, store=store_status, projection=projection,
                       orchestrator=orchestrator)
    return json_response(answer, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics in the text format."""
    st = state(request)
    await refresh_gauges(st)
    body = await st.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def refresh_gauges(st: AppState) -> None:
    """Read what the gauges show at scrape time; a part that fails keeps its last value."""
    m = st.metrics
    if st.services.orchestrator is not None:
        m.workflow_waits.set(st.services.orchestrator.blocked)
    if st.services.projector is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                lag = await projection_lag(st) or {}
            behind = lag_events(lag)
            if behind is not None:
                m.projection_lag.set(behind)
            seconds = lag.get("seconds_behind")
            if isinstance(seconds, (int, float)):
                m.projection_lag_seconds.set(seconds)
    read_model = st.services.read_model
    if read_model is not None:
        with contextlib.suppress(Exception):
            counts = await asyncio.to_thread(read_model.workflow_counts)
            for name in {*WORKFLOW_STATES, *counts}:
                m.workflows.labels(name).set(counts.get(name, 0))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            jobs = await job_gauges(st.store)
        for name, value in jobs.items():
            m.jobs.labels(name).set(value)


async def job_gauges(store: EventStore) -> dict[str, int]:
    """Jobs waiting (not yet delivered), running (delivered, unfinished) and dead."""
    waiting = running = dead = 0
    redis: Any = store.redis
    for p in range(store.partitions):
        dead += int(await redis.xlen(store.keys.dead_letters(p)))
        try:
            groups = await redis.xinfo_groups(store.keys.jobs(p))
        except Exception:  # no job stream yet
            continue
        for g in groups:
            if text(g.get("name")) == JOB_GROUP:
                running += int(g.get("pending") or 0)
                waiting += int(g.get("lag") or 0)
    return {"waiting": waiting, "running": running, "dead": dead}


ENDPOINTS = [
    Endpoint("GET", "/healthz", healthz, "Liveness", "operations", auth=False,
             responses={200: (Health, "The process answers")}),
    Endpoint("GET", "/readyz", readyz, "Readiness with projection lag", "operations",
             auth=False,
             responses={200: (Readiness, "Ready"),
                        503: (Readiness, "Not ready: Redis down or read models far behind")}),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", "operations", auth=False,
             responses={200: (None, "Prometheus text format")}, media_type="text/plain"),
]
