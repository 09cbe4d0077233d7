"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from chatlog.http._routing import Endpoint, json_response
from chatlog.http._state import AppState, state
from chatlog.http.models import Health, Readiness

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
    """Readiness: Redis answers and the read models are not far behind."""
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
            if behind > READY_MAX_LAG:
                ready = False
        if not st.services.projector.running:
            ready = False
            projection["running"] = False
        if st.services.projector.last_error is not None:
            projection["last_error"] = st.services.projector.last_error
    elif st.services.projector is None:
        projection = {"running": False, "detail": "no projector in this process"}
    answer = Readiness(ready=ready, store=store_status, projection=projection)
    return json_response(answer, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics in the text format."""
    st = state(request)
    if st.services.orchestrator is not None:
        st.metrics.workflow_waits.set(st.services.orchestrator.blocked)
    if st.services.projector is not None:
        try:
            async with asyncio.timeout(1.0):
                behind = lag_events(await projection_lag(st) or {})
            if behind is not None:
                st.metrics.projection_lag.set(behind)
        except Exception:  # a scrape still answers with the last known lag
            pass
    return web.Response(body=st.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


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
