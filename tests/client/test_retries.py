"""The client's retry rule, answer by answer (an HTTP transport scripted per test)."""

from __future__ import annotations

import asyncio
import json
import socket
import traceback
from collections.abc import Callable

import httpx
import pytest

from chatlog.client import ApiError, AsyncClient, Client, OutcomeUnknown, Unreachable

ACCEPTED = {"message_id": "6f1c1d7e-0000-4000-8000-000000000001", "thread_id": "t",
            "project": "6f1c1d7e-0000-4000-8000-000000000002", "project_name": "P",
            "partition": 0, "position": "1-0", "version": 1, "duplicate": False}
WORKFLOW = {"workflow_id": "wf-1", "project": "6f1c1d7e-0000-4000-8000-000000000002",
            "project_name": "P", "name": "", "state": "running", "deadline": None,
            "awaiting": None, "version": 2, "position": "2-0", "input": {}, "result": None,
            "reason": None, "history": [], "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "jobs": 0}


def scripted(*answers: int, body: dict | None = None) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    todo = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = todo.pop(0)
        if status == 0:
            raise httpx.ReadTimeout("no answer", request=request)
        if status >= 400:
            return httpx.Response(status, json={"title": "x", "status": status, "detail": "d"},
                                  headers={"Retry-After": "0"})
        return httpx.Response(status, json=body or ACCEPTED)

    client = Client("http://chatlog.test", transport=httpx.MockTransport(handle), backoff=0)
    return client, seen


def ids(seen: list[httpx.Request]) -> list[str]:
    return [json.loads(r.content)["event_id"] for r in seen]


@pytest.mark.parametrize("first", [0, 503, 504, 502])
def test_an_append_is_retried_with_the_same_event_id(first: int) -> None:
    client, seen = scripted(first, 201)
    assert client.append("P", "hi").position == "1-0"
    assert len(seen) == 2 and len(set(ids(seen))) == 1


def test_an_append_that_never_gets_an_answer_says_the_outcome_is_unknown() -> None:
    client, seen = scripted(504, 504, 504)
    client.retries = 2
    with pytest.raises(OutcomeUnknown) as err:
        client.append("P", "hi")
    assert err.value.event_id == ids(seen)[0] and len(set(ids(seen))) == 1


@pytest.mark.parametrize(("first", "retried"), [(503, True), (504, False), (0, False)])
def test_a_workflow_command_is_retried_only_when_nothing_was_written(
    first: int, retried: bool
) -> None:
    client, seen = scripted(first, 200, body=WORKFLOW)
    run: Callable[[], object] = lambda: client.start_workflow("P", "wf-1")  # noqa: E731
    if retried:
        run()
        assert len(seen) == 2
    else:
        with pytest.raises(OutcomeUnknown):
            run()
        assert len(seen) == 1


def test_a_problem_is_raised_at_once() -> None:
    client, seen = scripted(409)
    with pytest.raises(ApiError) as err:
        client.append("P", "hi")
    assert err.value.status == 409 and len(seen) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_traceback(exc: BaseException) -> bool:
    return "".join(traceback.format_exception(exc)).count("Traceback") == 1


def test_a_stopped_server_is_one_clear_error() -> None:
    """Unreachable alone: not httpcore's and httpx's tracebacks chained above it."""
    url = f"http://127.0.0.1:{_closed_port()}"
    with Client(url, retries=1, backoff=0) as client, pytest.raises(Unreachable) as err:
        client.append("P", "hi")
    assert "did not answer" in str(err.value) and _one_traceback(err.value)
    with Client(url, retries=0) as client, pytest.raises(Unreachable) as err:
        client.create_workflow("P", name="x")
    assert _one_traceback(err.value)

    async def main() -> None:
        async with AsyncClient(url, retries=1, backoff=0) as aclient:
            with pytest.raises(Unreachable) as aerr:
                await aclient.append("P", "hi")
            assert _one_traceback(aerr.value)
    asyncio.run(main())
