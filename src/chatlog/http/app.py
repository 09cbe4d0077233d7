"""The aiohttp application: routes, typed state, background tasks, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from redis import exceptions as rexc

from chatlog import erasure as erasure_service
from chatlog.erasure import Eraser
from chatlog.errors import ConfigError, StoreUnavailable
from chatlog.eventstore import EventStore, observe_appends
from chatlog.eventstore.archiver import Archiver
from chatlog.eventstore.connection import raise_if_cancelled
from chatlog.http import (
    erasure,
    events,
    jobs,
    messages,
    ops,
    queries,
    stats,
    vocabulary,
    workflows,
)
from chatlog.http._middleware import make_middleware
from chatlog.http._routing import BODY_TIMEOUT, Endpoint
from chatlog.http._server import AcceptErrors, ChatlogRunner, ConnectionLimits
from chatlog.http._state import STATE, AppState, Services
from chatlog.http.archive_metrics import watch_archive
from chatlog.http.auth import TokenRegistry
from chatlog.http.fanout import Fanout
from chatlog.http.metrics import Metrics
from chatlog.http.openapi import with_document
from chatlog.http.problems import SERVER_LINE_LIMIT
from chatlog.http.static_files import static_routes
from chatlog.orchestrator.service import Orchestrator
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.settings import Settings

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("chatlog")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def endpoints() -> list[Endpoint]:
    """Every operation of the API but ``/openapi.json`` (which documents these and itself)."""
    return [
        *messages.ENDPOINTS,
        *queries.ENDPOINTS,
        *workflows.ENDPOINTS,
        *jobs.ENDPOINTS,
        *erasure.ENDPOINTS,
        *events.ENDPOINTS,
        *ops.ENDPOINTS,
        *vocabulary.ENDPOINTS,
        *stats.ENDPOINTS,
    ]


def build_services(settings: Settings, store: EventStore) -> Services:
    """The projector, read model, orchestrator, eraser and archiver (not started)."""
    projector = Projector.from_settings(store, settings)
    return Services(
        projector=projector,
        read_model=ReadModel(settings.sqlite_path),
        orchestrator=Orchestrator(store, settings),
        eraser=_eraser_for(settings, store, projector),
        archiver=Archiver.from_settings(store, settings),
    )


def _eraser_for(settings: Settings, store: EventStore, projector: Projector | None) -> Eraser:
    """The eraser of ``settings``' data dir: its archive, its read model, its projector."""

    async def applied(partition: int, position: str) -> None:
        if projector is not None and projector.running:
            await projector.wait_for(partition, position, timeout=300.0)

    return erasure_service.eraser_for(settings, store, applied if projector is not None else None)


def create_app(
    settings: Settings,
    store: EventStore,
    *,
    services: Services | None = None,
    tokens: TokenRegistry | None = None,
    manage_services: bool = True,
) -> web.Application:
    """The HTTP API over ``store``.

    ``services`` holds the projector, read model and orchestrator (a missing
    one makes its endpoints answer 503 "not available"). With
    ``manage_services`` the app starts them at startup and stops them at
    cleanup, after the HTTP server has stopped taking requests. The tokens
    come from ``settings.tokens_file`` unless ``tokens`` is given.
    """
    metrics = Metrics()
    app = web.Application(
        middlewares=[make_middleware(metrics)],  # metrics, stats timing and problem+json
        client_max_size=settings.max_body_bytes,
    )
    app[BODY_TIMEOUT] = settings.body_timeout
    services = services or Services()
    observe_appends(store, metrics)
    if services.projector is not None and hasattr(services.projector, "on_applied"):
        services.projector.on_applied = metrics.applied
    metrics.watch_projector(lambda: services.projector)
    watch_archive(metrics, store, lambda: services.archiver)
    fanout = Fanout(
        store,
        buffer=settings.sse_buffer,
        on_count=metrics.sse_subscribers.set,
        on_cutoff=metrics.sse_cutoffs.inc,
        keepalive=settings.sse_keepalive,
    )
    app[STATE] = AppState(
        settings=settings,
        store=store,
        tokens=tokens or TokenRegistry.load(settings.tokens_file, settings.project_namespace),
        fanout=fanout,
        services=services,
        metrics=metrics,
    )
    for ep in with_document(endpoints(), title="chatlog", version=_version()):
        app.router.add_route(ep.method, ep.path, ep.handler)
    app.router.add_routes(static_routes())

    async def background(app: web.Application) -> AsyncIterator[None]:
        started: list[Orchestrator | Projector | Archiver] = []
        try:
            if manage_services:
                # The orchestrator's catch-up (the log after its restore point: on a
                # fresh data dir, the hot tail) goes on while the server answers, as the
                # projector's does: /readyz says so. The archiver last: background work.
                for part in (services.orchestrator, services.projector, services.archiver):
                    if part is not None:
                        await (part.start(wait=False) if isinstance(part, Orchestrator)
                               else part.start())
                        started.append(part)
            if manage_services and services.eraser is not None:
                resume = asyncio.get_running_loop().create_task(_resume(services.eraser))
                app[STATE].background.add(resume)
            yield
        finally:
            for task in list(app[STATE].background):
                task.cancel()
            for task in list(app[STATE].background):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await fanout.stop()
            for part in reversed(started):  # archiver, projector, then orchestrator
                await part.stop()
            if manage_services and services.read_model is not None:
                services.read_model.close()

    async def close_streams(app: web.Application) -> None:
        for stream in list(app[STATE].streams):
            stream.stop()

    app.cleanup_ctx.append(background)
    app.cleanup_ctx.append(stats.sampling)
    app.on_shutdown.append(close_streams)
    return app


#: Seconds between attempts to resume erasures while the store is unavailable (doubling).
RESUME_RETRY = (0.2, 5.0)
#: The store is down (not a failure of the erasure itself): wait for it.
_STORE_DOWN = (StoreUnavailable, rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError)


async def _resume(eraser: Eraser) -> None:
    """Complete the erasures a crash or a restart interrupted. While the store is
    unavailable, say so in one line and try again until it is back; another
    failure is logged (with its traceback) and retried on restart."""
    delay, most = RESUME_RETRY
    warned = False
    while True:
        try:
            done = await eraser.resume()
            break
        except _STORE_DOWN as exc:
            raise_if_cancelled()
            if not warned:
                log.warning("interrupted erasures not resumed yet: %s; retrying until the "
                            "store is back", _first_line(exc))
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)
        except Exception:
            log.exception("an interrupted erasure could not be completed; it is retried on "
                          "restart")
            return
    for report in done:
        log.info("resumed erasure %s of project %s: done", report.erasure_id, report.project)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The connection bounds of ``settings``."""
    return ConnectionLimits(
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


@contextlib.asynccontextmanager
async def running(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` until the block ends (then stop it cleanly).

    Connections are bounded by the app's settings (header, body and keep-alive
    timeouts, a connection cap); requests aiohttp's parser rejects are
    answered as problem+json; failed accepts (out of file descriptors) are
    logged once per interval with a count.
    """
    runner = ChatlogRunner(
        app,
        limits=connection_limits(app[STATE].settings),
        shutdown_timeout=5.0,
        access_log=None,
        max_line_size=SERVER_LINE_LIMIT,
        max_field_size=SERVER_LINE_LIMIT,
    )
    accept_errors = AcceptErrors(asyncio.get_running_loop())
    accept_errors.install()
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "--port (or CHATLOG_PORT), or stop what uses it"
            ) from exc
        yield runner
    finally:
        await runner.cleanup()
        accept_errors.uninstall()
