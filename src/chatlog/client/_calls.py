"""What both clients share: each API call as a :class:`Call`, the retry rule, errors, SSE parsing.

A call says how it may be retried:

- ``READ``: a GET; retried after any transport error, timeout, 502, 503 or 504.
- ``IDEMPOTENT``: a write that carries an id fixed once per call (an append's
  ``event_id``, a job's ``job_id``): retried like a read, because the server
  answers a repeat with the original (never a second write).
- ``ONCE``: a workflow command; retried only when nothing can have been
  written (the connection was refused, or a 503). After a timeout or a 504 the
  outcome is unknown: :class:`OutcomeUnknown`.
"""

from __future__ import annotations

import enum
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from chatlog.events import TERMINAL
from chatlog.http.auth import TOKEN_PATTERN
from chatlog.orchestrator.views import WorkflowView

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Retry(enum.Enum):
    READ = "read"
    IDEMPOTENT = "idempotent"
    ONCE = "once"


class ClientError(Exception):
    """Root of the client's errors."""


class ApiError(ClientError):
    """The server answered with a problem: ``status``, ``title``, ``detail``, ``problem``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", "Error"))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}")


class OutcomeUnknown(ClientError):
    """The server may or may not have applied the write (a timeout or a 504 after every retry).

    ``event_id`` (or ``job_id``) is the id the call used: retrying with it is safe.
    """

    def __init__(self, message: str, *, event_id: str | None = None) -> None:
        self.event_id = event_id
        super().__init__(message)


class Unreachable(ClientError):
    """No answer from the server after every retry (nothing was written)."""


@dataclass(frozen=True)
class WaitResult:
    """What :meth:`Client.wait_for` saw: ``reached`` or not, and the workflow then."""

    reached: bool
    workflow: WorkflowView
    #: The states waited for.
    states: frozenset[str]

    @property
    def state(self) -> str:
        return self.workflow.state

    def __bool__(self) -> bool:
        return self.reached


@dataclass
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    retry: Retry = Retry.READ
    #: Statuses answered by ``parse`` rather than raised (e.g. 408 for a long-poll).
    accept: frozenset[int] = frozenset()
    #: The id that makes a retry safe (shown in OutcomeUnknown).
    key: str | None = None
    timeout: float | None = None

    def query(self) -> dict[str, Any]:
        return {k: _param(v) for k, v in self.params.items() if v is not None}


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value)
    return value


def parsed(cls: type[M], content: bytes | str) -> M:
    """``content`` as ``cls``; a :class:`ClientError` when it is not (a proxy's page,
    another server, a version of chatlog that answers otherwise)."""
    try:
        return cls.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ClientError(f"the answer is not the API's {cls.__name__}: {first['msg']} "
                          f"(at {'.'.join(map(str, first['loc'])) or 'the top'})") from None


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(resp: httpx.Response) -> M:
        return parsed(cls, resp.content)

    return parse


def auth_headers(token: str | None) -> dict[str, str]:
    """The Authorization header of ``token``; ValueError for one no header can carry."""
    if token is None:
        return {}
    if not re.fullmatch(TOKEN_PATTERN, token):
        raise ValueError("token must be printable ASCII without spaces (as the server's "
                         "tokens file has it)")
    return {"Authorization": f"Bearer {token}"}


def problem_of(resp: httpx.Response) -> ApiError:
    try:
        doc = orjson.loads(resp.content)
        if not isinstance(doc, dict):
            raise ValueError(doc)
    except ValueError:
        doc = {"title": resp.reason_phrase, "detail": resp.text[:500]}
    return ApiError(resp.status_code, doc)


#: Statuses after which a call of each kind may be sent again.
RETRY_STATUS = {
    Retry.READ: frozenset({502, 503, 504}),
    Retry.IDEMPOTENT: frozenset({502, 503, 504}),
    Retry.ONCE: frozenset({503}),
}
#: Transport errors after which nothing can have reached the server.
NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
#: Transport errors after which the request may have been applied.
MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout, httpx.ReadError,
    httpx.WriteError, httpx.RemoteProtocolError,
)


def retryable_error(call: Call[Any], exc: Exception) -> bool:
    """May ``call`` be sent again after ``exc``?"""
    if isinstance(exc, NOT_SENT):
        return True
    return isinstance(exc, MAYBE_SENT) and call.retry is not Retry.ONCE


def delay(attempt: int, resp: httpx.Response | None, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (Retry-After wins, within ``cap``)."""
    if resp is not None:
        after = resp.headers.get("Retry-After")
        if after is not None:
            try:
                return min(cap, max(0.0, float(after)))
            except ValueError:
                pass
    return float(min(cap, base * (2 ** attempt)) * (0.5 + random.random() / 2))


def give_up(call: Call[Any], resp: httpx.Response | None, exc: Exception | None) -> Exception:
    """The error to raise when ``call`` ran out of retries."""
    what = f"{call.method} {call.path}"
    unknown = call.retry is not Retry.READ and (  # (a read has no outcome to doubt)
        (resp is not None and resp.status_code == 504)
        or (exc is not None and isinstance(exc, MAYBE_SENT)))
    if unknown:
        return OutcomeUnknown(
            f"{what}: the outcome is unknown ({exc or 'HTTP 504'}); "
            + (f"retrying with id {call.key} is safe" if call.key else "read before retrying"),
            event_id=call.key,
        )
    if resp is not None:
        return problem_of(resp)
    return Unreachable(f"{what}: the server did not answer ({exc})")


_ENDED = frozenset(s.value for s in TERMINAL)


def settled(view: WorkflowView, states: frozenset[str]) -> bool | None:
    """True when ``view`` is in one of ``states``, False when it ended elsewhere, else None."""
    if view.state in states:
        return True
    if view.state in _ENDED:
        return False
    return None


def new_id() -> str:
    return str(uuid.uuid4())


class SseParser:
    """Feed lines of a ``text/event-stream``; get (id, data) per event."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if line == "":
            if not self._data:
                return None
            event = (self._id, "\n".join(self._data))
            self._data = []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


STREAM_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, httpx.StreamError)
