"""``AsyncClient``: the HTTP API from asyncio code (httpx)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx

from chatlog.client import _api
from chatlog.client._calls import (
    RETRY_STATUS,
    STREAM_ERRORS,
    Call,
    Retry,
    SseParser,
    Unreachable,
    WaitResult,
    auth_headers,
    delay,
    give_up,
    parsed,
    problem_of,
    retryable_error,
    settled,
)
from chatlog.http.jobs import JobsPage
from chatlog.http.models import EventOut, EventsPage, MessageAccepted, ProjectsPage
from chatlog.orchestrator.job_records import JobView
from chatlog.orchestrator.views import WorkflowView
from chatlog.projections.models import MessagePage, ThreadPage, WorkflowsPage

T = TypeVar("T")


class AsyncClient:
    """A client of one chatlog server.

    ``AsyncClient("http://127.0.0.1:8080", token="...")``; use it as an async
    context manager or await :meth:`close`. Writes that carry an id (appends, job
    enqueues) are retried with that id after timeouts, 503 and 504, so they
    never apply twice; workflow commands are retried only when nothing was
    written. Errors: :class:`ApiError` (a problem answer),
    :class:`OutcomeUnknown`, :class:`Unreachable`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = auth_headers(token)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: Call[T]) -> T:
        resp: httpx.Response | None = None
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay(attempt - 1, resp, self.backoff, self.max_backoff))
            resp, error = None, None
            try:
                resp = await self._http.request(
                    call.method, call.path, params=call.query(), json=call.json,
                    timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if not retryable_error(call, exc):
                    raise give_up(call, None, exc) from None
                error = exc
                continue
            if resp.status_code < 400 or resp.status_code in call.accept:
                return call.parse(resp)
            if resp.status_code == 504 and call.retry is Retry.ONCE:
                raise give_up(call, resp, None)  # 504: the outcome is unknown
            if resp.status_code not in RETRY_STATUS[call.retry]:
                raise problem_of(resp)
        raise give_up(call, resp, error) from None

    # -- messages ------------------------------------------------------------------

    async def append(
        self, project: str, content: str, *, role: str = "user", thread_id: str | None = None,
        metadata: dict[str, Any] | None = None, expected_version: int | None = None,
        event_id: str | None = None,
    ) -> MessageAccepted:
        """Append a message; the event id is made once, so retries never duplicate it."""
        return await self._run(_api.append(
            project, content, role=role, thread_id=thread_id, metadata=metadata,
            expected_version=expected_version, event_id=event_id))

    async def projects(self) -> ProjectsPage:
        return await self._run(_api.projects())

    async def threads(
        self, project: str, *, limit: int | None = None, cursor: str | None = None,
        min_position: str | None = None,
    ) -> ThreadPage:
        """The conversation list (``min_position``: wait until it includes that append)."""
        return await self._run(_api.threads(project, limit=limit, cursor=cursor,
                                      min_position=min_position))

    async def messages(
        self, project: str, thread_id: str, *, after_version: int | None = None,
        limit: int | None = None, min_position: str | None = None,
    ) -> MessagePage:
        """A thread's messages in order (``min_position``: read your own write)."""
        return await self._run(_api.messages(project, thread_id, after_version=after_version,
                                       limit=limit, min_position=min_position))

    # -- the log ---------------------------------------------------------------------

    async def events(
        self, *, after: str | None = None, project: str | None = None,
        thread_id: str | None = None, workflow_id: str | None = None,
        types: list[str] | None = None, limit: int | None = None,
    ) -> EventsPage:
        """One page of events after a cursor."""
        return await self._run(_api.events(after=after, project=project, thread_id=thread_id,
                                     workflow_id=workflow_id, types=types, limit=limit))

    async def replay(
        self, *, after: str | None = None, project: str | None = None,
        thread_id: str | None = None, workflow_id: str | None = None,
        types: list[str] | None = None, page_size: int = 500,
    ) -> AsyncIterator[EventOut]:
        """Every event after ``after`` up to the end of the log, page by page."""
        while True:
            page = await self.events(after=after, project=project, thread_id=thread_id,
                               workflow_id=workflow_id, types=types, limit=page_size)
            for event in page.events:
                yield event
            after = page.cursor
            if not page.has_more:
                return

    async def stream(
        self, *, after: str | None = None, project: str | None = None,
        thread_id: str | None = None, workflow_id: str | None = None,
        types: list[str] | None = None, give_up_after: float | None = None,
    ) -> AsyncIterator[EventOut]:
        """Events as they are appended (SSE), forever; after any disconnect it
        reconnects with the last event's id, so nothing is missed or repeated.

        ``give_up_after``: seconds without a connection before raising
        :class:`Unreachable` (None: keep trying).
        """
        params = _api.stream_params(project=project, thread_id=thread_id,
                                    workflow_id=workflow_id, types=types)
        last = after
        failures = 0
        down_since: float | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self._http.stream("GET", "/v1/events/stream", params=params,
                                       headers=headers,
                                       timeout=httpx.Timeout(10.0, read=None)) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        if resp.status_code not in (502, 503, 504):
                            raise problem_of(resp)
                    else:
                        failures, down_since = 0, None
                        parser = SseParser()
                        async for line in resp.aiter_lines():
                            got = parser.feed(line)
                            if got is not None:
                                event = parsed(EventOut, got[1])
                                last = event.cursor
                                yield event
            except STREAM_ERRORS:
                pass
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if give_up_after is not None and now - down_since > give_up_after:
                raise Unreachable(f"the event stream stayed unreachable for {give_up_after:g} s")
            await asyncio.sleep(delay(min(failures, 6), None, self.backoff, self.max_backoff))
            failures += 1

    # -- workflows -------------------------------------------------------------------

    async def create_workflow(
        self, project: str, *, name: str = "", input: dict[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowView:
        return await self._run(_api.create_workflow(project, name=name, input=input,
                                              workflow_id=workflow_id))

    async def start_workflow(
        self, project: str, workflow_id: str, *, input: dict[str, Any] | None = None
    ) -> WorkflowView:
        return await self._run(_api.command(project, workflow_id, "start", {"input": input or {}}))

    async def request_approval(
        self, project: str, workflow_id: str, *, prompt: str = ""
    ) -> WorkflowView:
        return await self._run(_api.command(project, workflow_id, "approval-requests",
                                      {"prompt": prompt}))

    async def decide_approval(
        self, project: str, workflow_id: str, *, approved: bool, comment: str = ""
    ) -> WorkflowView:
        return await self._run(_api.command(project, workflow_id, "approval",
                                      {"approved": approved, "comment": comment}))

    async def approve(self, project: str, workflow_id: str, *, comment: str = "") -> WorkflowView:
        return await self.decide_approval(project, workflow_id, approved=True, comment=comment)

    async def reject(self, project: str, workflow_id: str, *, comment: str = "") -> WorkflowView:
        return await self.decide_approval(project, workflow_id, approved=False, comment=comment)

    async def complete_workflow(
        self, project: str, workflow_id: str, *, result: dict[str, Any] | None = None
    ) -> WorkflowView:
        return await self._run(
            _api.command(project, workflow_id, "complete", {"result": result or {}}))

    async def fail_workflow(self, project: str, workflow_id: str, *, reason: str) -> WorkflowView:
        return await self._run(_api.command(project, workflow_id, "fail", {"reason": reason}))

    async def cancel_workflow(
        self, project: str, workflow_id: str, *, reason: str = ""
    ) -> WorkflowView:
        return await self._run(_api.command(project, workflow_id, "cancel", {"reason": reason}))

    async def get_workflow(self, project: str, workflow_id: str) -> WorkflowView:
        return await self._run(_api.get_workflow(project, workflow_id))

    async def list_workflows(
        self, project: str, *, state: str | None = None, limit: int | None = None,
        cursor: str | None = None, min_position: str | None = None,
    ) -> WorkflowsPage:
        return await self._run(_api.list_workflows(project, state=state, limit=limit, cursor=cursor,
                                             min_position=min_position))

    async def wait_for(
        self, project: str, workflow_id: str, state: str | list[str],
        timeout: float,  # noqa: ASYNC109 - the server long-polls; this bounds the whole wait
    ) -> WaitResult:
        """Long-poll until the workflow is in ``state`` (one of them), has ended, or
        ``timeout`` seconds pass; never raises for "not yet": see ``result.reached``."""
        states = frozenset([state] if isinstance(state, str) else state)
        deadline = _api.wait_deadline(timeout)
        while True:
            left = max(0.0, deadline - time.monotonic())
            view = await self._run(_api.poll_workflow(project, workflow_id, states,
                                                min(left, _api.MAX_POLL)))
            if view is None:
                view = await self.get_workflow(project, workflow_id)
            done = settled(view, states)
            if done is not None or time.monotonic() >= deadline:
                return WaitResult(bool(done), view, states)

    # -- jobs ----------------------------------------------------------------------------

    async def enqueue_job(
        self, project: str, kind: str, *, payload: dict[str, Any] | None = None,
        workflow_id: str | None = None, job_id: str | None = None,
        max_deliveries: int | None = None,
    ) -> JobView:
        """Queue a job; its id is made once per call, so a retry never queues it twice."""
        return await self._run(_api.enqueue_job(project, kind, payload=payload,
                                          workflow_id=workflow_id, job_id=job_id,
                                          max_deliveries=max_deliveries))

    async def get_job(self, project: str, job_id: str) -> JobView:
        return await self._run(_api.get_job(project, job_id))

    async def list_jobs(
        self, project: str, *, state: str | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> JobsPage:
        """A project's jobs, newest first; ``state="dead"`` lists the dead letters."""
        return await self._run(_api.list_jobs(project, state=state, limit=limit, cursor=cursor))

