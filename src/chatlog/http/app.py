"""The aiohttp application: routes, typed state, background tasks, shutdown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from chatlog.errors import ConfigError
from chatlog.eventstore import EventStore
from chatlog.eventstore.archiver import Archiver
from chatlog.http import events, jobs, messages, ops, queries, stats, vocabulary, workflows
from chatlog.http._routing import Endpoint
from chatlog.http._state import STATE, AppState, Services
from chatlog.http.auth import TokenRegistry
from chatlog.http.fanout import Fanout
from chatlog.http.metrics import Metrics
from chatlog.http.openapi import with_document
from chatlog.http.problems import SERVER_LINE_LIMIT, make_problem_middleware
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
        *events.ENDPOINTS,
        *ops.ENDPOINTS,
        *vocabulary.ENDPOINTS,
        *stats.ENDPOINTS,
    ]


def build_services(settings: Settings, store: EventStore) -> Services:
    """The projector, read model, orchestrator and archiver for ``settings`` (not started)."""
    return Services(
        projector=Projector.from_settings(store, settings),
        read_model=ReadModel(settings.sqlite_path),
        orchestrator=Orchestrator(store, settings),
        archiver=Archiver.from_settings(store, settings),
    )


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
        middlewares=[stats.timing_middleware, make_problem_middleware(metrics.observe_status)],
        client_max_size=settings.max_body_bytes,
    )
    services = services or Services()
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
                # The orchestrator first: its start returns once it has scanned the
                # log, which the projector's own catch-up would slow down (measured).
                # The archiver last: its passes are background work.
                for part in (services.orchestrator, services.projector, services.archiver):
                    if part is not None:
                        await part.start()
                        started.append(part)
            yield
        finally:
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


@contextlib.asynccontextmanager
async def running(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` until the block ends (then stop it cleanly)."""
    runner = web.AppRunner(
        app,
        shutdown_timeout=5.0,
        access_log=None,
        max_line_size=SERVER_LINE_LIMIT,
        max_field_size=SERVER_LINE_LIMIT,
    )
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
