"""``GET /v1/stats``: the console's live charts, sampled by the server once a second.

A :class:`Stats` keeps the last two minutes of samples: events appended per
second (from the log itself, so CLI and other writers count too), HTTP
requests per second and their p99 latency, and the projection's lag in events
and seconds; plus the store's (Valkey's) status and the archive's. The
browser polls this small JSON document instead of parsing ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field
from redis import exceptions as rexc

from chatlog.errors import ChatlogError, Forbidden
from chatlog.eventstore.added import entries_added
from chatlog.http._routing import Endpoint, json_response
from chatlog.http._state import STATE, AppState, state
from chatlog.http.models import Out

log = logging.getLogger(__name__)

#: Seconds between samples, and how many are kept (two minutes).
INTERVAL = 1.0
KEEP = 120
#: Latencies kept per interval for the p99 (a uniform sample beyond it is not needed:
#: a console at one request per second per viewer stays far below it).
MAX_LATENCIES = 10_000
#: Long-lived answers are not requests with a latency.
UNTIMED = frozenset({"/v1/events/stream"})


class Sample(Out):
    time: float = Field(description="Unix time of the sample (seconds)")
    appends_per_s: float | None = Field(description="Events appended to the log per second")
    requests_per_s: float = Field(description="HTTP requests answered per second")
    p99_ms: float | None = Field(description="99th percentile latency of those requests")
    lag_events: int | None = Field(description="Events the read models are behind")
    lag_seconds: float | None = Field(description="Age of the oldest unapplied event")


class ComponentStatus(Out):
    status: str = Field(description="ok, unavailable, or not configured")
    detail: str = ""
    latency_ms: float | None = None


class StatsDocument(Out):
    interval: float = Field(description="Seconds between samples")
    samples: list[Sample] = Field(description="Oldest first, at most two minutes")
    store: ComponentStatus = Field(description="The Redis / Valkey server")
    archive: ComponentStatus = Field(description="The archive of older events")


class Stats:
    """Samples the app once per :data:`INTERVAL`; requests report their latency here."""

    def __init__(self, st: AppState) -> None:
        self.st = st
        self.samples: deque[Sample] = deque(maxlen=KEEP)
        self.latencies: list[float] = []
        self.requests = 0
        self.store = ComponentStatus(status="unknown")
        self.archive = ComponentStatus(status="unknown")
        self._archive_at = float("-inf")
        self._appended: int | None = None
        self._last = time.monotonic()

    def observe(self, seconds: float) -> None:
        self.requests += 1
        if len(self.latencies) < MAX_LATENCIES:
            self.latencies.append(seconds)

    async def _appended_total(self) -> int:
        """Events ever appended to the log (each partition's ``entries-added``)."""
        store = self.st.store
        total = 0
        for p in range(store.partitions):
            total += await entries_added(store.redis, store.keys.log(p)) or 0
        return total

    async def sample(self) -> Sample:
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-3)
        self._last = now
        latencies, self.latencies = self.latencies, []
        requests, self.requests = self.requests, 0
        p99 = None
        if latencies:
            latencies.sort()
            p99 = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2)
        appends = None
        began = time.perf_counter()
        try:
            async with asyncio.timeout(2.0):
                total = await self._appended_total()
            self.store = ComponentStatus(
                status="ok", detail=self.st.store.url or "",
                latency_ms=round((time.perf_counter() - began) * 1000, 2))
            if self._appended is not None:
                appends = round(max(total - self._appended, 0) / elapsed, 2)
            self._appended = total
        except (ChatlogError, rexc.RedisError, OSError, TimeoutError) as exc:
            self.store = ComponentStatus(status="unavailable", detail=exc.__class__.__name__)
            self._appended = None
        lag_events = lag_seconds = None
        projector = self.st.services.projector
        if projector is not None and self.store.status == "ok":
            try:
                async with asyncio.timeout(2.0):
                    lag = await projector.lag()
                lag_events, lag_seconds = lag.events_behind, lag.seconds_behind
            except Exception as exc:  # the chart shows a gap; the sampler goes on
                log.debug("stats: no projection lag: %s", exc)
        if now - self._archive_at >= ARCHIVE_EVERY:
            self._archive_at = now
            self.archive = await asyncio.to_thread(archive_status, self.st.settings)
        sample = Sample(
            time=round(time.time(), 3), appends_per_s=appends,
            requests_per_s=round(requests / elapsed, 2), p99_ms=p99,
            lag_events=lag_events, lag_seconds=lag_seconds,
        )
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(INTERVAL)

    def document(self) -> StatsDocument:
        return StatsDocument(
            interval=INTERVAL, samples=list(self.samples), store=self.store,
            archive=self.archive,
        )


#: Seconds between looks at the archive (a manifest read per partition).
ARCHIVE_EVERY = 10.0


def archive_url(settings: Any) -> str | None:
    """Where the archive is: ``CHATLOG_ARCHIVE_URL`` once settings have it, else
    ``<data dir>/archive`` if it exists (None: no archive here)."""
    url = getattr(settings, "archive_url", None)
    if url:
        return str(url)
    local = Path(settings.data_dir) / "archive"
    return str(local) if local.is_dir() else None


def archive_status(settings: Any) -> ComponentStatus:
    """The archive's segments, events and bytes (synchronous file I/O: run in a thread)."""
    url = archive_url(settings)
    if url is None:
        return ComponentStatus(status="not configured",
                               detail="no archive: every event is in Redis")
    try:
        from chatlog.eventstore.archive import Archive

        archive = Archive.open(url)
        segments = [s for p in archive.partitions() for s in archive.segments(p)]
    except Exception as exc:  # shown on the Health page; the sampler goes on
        return ComponentStatus(status="unavailable", detail=f"{exc.__class__.__name__}: {exc}")
    events = sum(s.count for s in segments)
    size = sum(s.bytes for s in segments)
    return ComponentStatus(
        status="ok",
        detail=f"{len(segments)} segments, {events} events, {size / 1e6:.1f} MB at {url}")


STATS: web.AppKey[Stats] = web.AppKey("chatlog.stats", Stats)

async def sampling(app: web.Application) -> AsyncIterator[None]:
    """The sampler task for the app's lifetime (a ``cleanup_ctx``)."""
    stats = Stats(app[STATE])
    app[STATS] = stats
    task = asyncio.create_task(stats.run(), name="chatlog-stats")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get_stats(request: web.Request) -> web.Response:
    """The last two minutes of samples and the components' status (admin only)."""
    st = state(request)
    principal = st.tokens.authenticate(request)
    if not principal.admin:
        raise Forbidden("the server's stats cover every project: an admin token is needed")
    stats: Stats | None = request.app.get(STATS)
    if stats is None:
        doc: Any = StatsDocument(
            interval=INTERVAL, samples=[], store=ComponentStatus(status="unknown"),
            archive=ComponentStatus(status="not configured"))
    else:
        doc = stats.document()
    return json_response(doc)


ENDPOINTS = [
    Endpoint("GET", "/v1/stats", get_stats, "Live server stats for the console", "operations",
             responses={200: (StatsDocument, "Samples, oldest first, and component status")},
             description="Sampled by the server every second: appends/s, requests/s, "
                         "p99 latency, projection lag; Redis and archive status. Admin only."),
]
