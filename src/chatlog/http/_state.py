"""The app's typed state: everything a handler needs, under one ``web.AppKey``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from chatlog.erasure import Eraser
from chatlog.errors import ChatlogError
from chatlog.eventstore import EventStore
from chatlog.eventstore.archiver import Archiver
from chatlog.http._routing import project_of
from chatlog.http._sse import SseEncoder
from chatlog.http.auth import TokenRegistry
from chatlog.http.fanout import Fanout
from chatlog.http.metrics import Metrics
from chatlog.identity import ProjectKey
from chatlog.orchestrator.service import Orchestrator
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.settings import Settings

#: Log reads (replay, SSE catch-up) in flight at once.
READ_SLOTS = 16


class Stoppable(Protocol):
    def stop(self) -> None: ...


class ServiceUnavailable(ChatlogError):
    """A part of chatlog this endpoint needs is not running in this process."""

    status = 503
    title = "Not available"
    retry_after = 5


@dataclass
class Services:
    """The parts built beside the log; None = not available here (endpoints answer 503)."""

    #: Keeps the read models up to date; ``wait_for`` gives read-your-writes.
    projector: Projector | None = None
    #: Answers the read queries (projects, threads, messages, workflows).
    read_model: ReadModel | None = None
    #: Drives workflows and their waits.
    orchestrator: Orchestrator | None = None
    #: Erases projects and threads (and resumes unfinished erasures on start).
    eraser: Eraser | None = None
    #: Moves events beyond the hot window from Redis into the archive.
    archiver: Archiver | None = None


@dataclass
class AppState:
    settings: Settings
    store: EventStore
    tokens: TokenRegistry
    fanout: Fanout
    services: Services
    metrics: Metrics
    #: Open SSE streams, asked to end on shutdown.
    streams: set[Stoppable] = field(default_factory=set)
    #: Bounds the log reads in flight (replay pages, SSE catch-ups): hundreds
    #: of subscribers reconnecting at once must not exhaust the Redis pool
    #: (100 connections) that appends need too.
    reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_SLOTS))
    #: Each event's SSE encoding, made once for all subscribers.
    sse: SseEncoder = field(default_factory=SseEncoder)
    #: Tasks the app owns beyond a request (erasures that outlive their DELETE).
    background: set[asyncio.Task[object]] = field(default_factory=set)

    def project_of(self, request: web.Request) -> ProjectKey:
        """The path's ``{project}``, normalised (no authorization)."""
        return project_of(request, self.settings.project_namespace)

    def authorized_project(self, request: web.Request, *, write: bool = False) -> ProjectKey:
        """The path's ``{project}``, normalised, once the caller's token may read it
        (or write it): 401/403 otherwise. Every project-scoped endpoint asks here."""
        principal = self.tokens.authenticate(request)
        project = project_of(request, self.settings.project_namespace)
        if write:
            principal.require_write(project)
        else:
            principal.require_read(project)
        return project

    def projector(self) -> Projector:
        if self.services.projector is None:
            raise ServiceUnavailable("the read-model projector is not running in this process")
        return self.services.projector

    def read_model(self) -> ReadModel:
        if self.services.read_model is None:
            raise ServiceUnavailable("the read models are not available in this process")
        return self.services.read_model

    def orchestrator(self) -> Orchestrator:
        if self.services.orchestrator is None:
            raise ServiceUnavailable("the workflow orchestrator is not running in this process")
        return self.services.orchestrator


STATE: web.AppKey[AppState] = web.AppKey("chatlog", AppState)


def state(request: web.Request) -> AppState:
    return request.app[STATE]
