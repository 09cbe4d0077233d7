"""Request and response models of the HTTP API.

They validate what comes in (bodies in strict JSON mode, unknown fields
refused) and are the source of ``/openapi.json``: nothing is written twice.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from chatlog.events import RecordedEvent
from chatlog.json_values import TOO_DEEP, check_json, within_depth
from chatlog.projections.models import ProjectSummary

POSITION_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"


#: Validation context of values orjson parsed: it refuses what ``_check_json``
#: looks for (integers beyond 64 bits, non-finite numbers), so the walk is skipped.
PARSED_BY_ORJSON = "parsed_by_orjson"


def _storable(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """JSON objects are stored as they came: numbers must fit 64 bits and be finite, and
    nesting is at most ``MAX_JSON_DEPTH`` deep (readers write it back inside envelopes)."""
    if not (info.context and info.context.get(PARSED_BY_ORJSON)):
        check_json(value)
    elif not within_depth(value):
        raise ValueError(TOO_DEEP)
    return value


#: A JSON object chatlog can store without changing it.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
CURSOR_PATTERN = r"^(0|[0-9]{1,20}-[0-9]{1,20}(,[0-9]{1,20}-[0-9]{1,20})*)$"
MAX_CONTENT = 262_144


class Body(BaseModel):
    """A request body: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Query(BaseModel):
    """Query parameters (strings from the URL, converted; unknown ones refused; a
    number is finite: ``nan`` is not "above the maximum")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Out(BaseModel):
    """A response document."""

    model_config = ConfigDict(extra="forbid")


# -- problems ------------------------------------------------------------------


class FieldError(Out):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """An error answer (RFC 9457 problem+json); some carry more fields."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


# -- messages --------------------------------------------------------------------


class PostMessage(Body):
    """Append a chat message to a thread."""

    thread_id: str | None = Field(
        default=None, max_length=200,
        description='The thread; null, "", "null", "none" or "undefined" start a new one',
    )
    role: str = Field(min_length=1, max_length=64, description="Who wrote it (user, assistant...)")
    content: str = Field(max_length=MAX_CONTENT)
    metadata: JsonObject = Field(default_factory=dict)
    event_id: uuid.UUID | None = Field(
        default=None, description="Client-chosen message id: a retry with it appends nothing"
    )
    expected_version: int | None = Field(
        default=None, ge=0, le=2**53,
        description="Append only if the thread is at this version (0: a new thread)",
    )


class MessageAccepted(Out):
    """What the log assigned to an appended message."""

    message_id: uuid.UUID
    thread_id: str
    project: uuid.UUID
    project_name: str
    partition: int
    position: str = Field(description="Pass as min_position to read your own write")
    version: int
    duplicate: bool = Field(description="True when this event_id was appended before")


# -- events ----------------------------------------------------------------------


class EventOut(RecordedEvent):
    """An event as stored in the log, with the cursor that resumes after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str = Field(description="Resume after this event: pass as `after` or Last-Event-ID")


class EventsPage(Out):
    events: list[EventOut]
    cursor: str = Field(
        description="Where this page ends: pass as `after` for the next page (as `before` "
                    "when this page was read with `before`: the next older page)")
    has_more: bool
    newer_cursor: str | None = Field(
        default=None,
        description="Pages read with `before` only: pass as `after` (or to the stream) to "
                    "get exactly the events newer than this page")


#: ``before=end``: read backwards from the newest event.
BEFORE_PATTERN = r"^(end|[0-9]{1,20}-[0-9]{1,20}(,[0-9]{1,20}-[0-9]{1,20})*)$"


class EventsQuery(Query):
    after: str | None = Field(default=None, pattern=CURSOR_PATTERN, description="A cursor")
    before: str | None = Field(
        default=None, pattern=BEFORE_PATTERN,
        description="Read backwards, newest first: events before this cursor (`end`: from "
                    "the newest event). Each event's `cursor` then continues backwards",
    )
    project: str | None = Field(default=None, max_length=300)
    thread_id: str | None = Field(default=None, max_length=200)
    workflow_id: str | None = Field(default=None, max_length=200)
    types: str | None = Field(default=None, max_length=2000, description="Comma-separated types")
    limit: int = Field(default=100, ge=1, le=1000)


class StreamQuery(Query):
    after: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="A cursor (Last-Event-ID wins)"
    )
    project: str | None = Field(default=None, max_length=300)
    thread_id: str | None = Field(default=None, max_length=200)
    workflow_id: str | None = Field(default=None, max_length=200)
    types: str | None = Field(default=None, max_length=2000, description="Comma-separated types")
    access_token: str | None = Field(
        default=None, max_length=500,
        description="The bearer token, for EventSource (which cannot send headers)",
    )


# -- queries ---------------------------------------------------------------------


class ThreadsQuery(Query):
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500)
    min_position: str | None = Field(default=None, pattern=POSITION_PATTERN)


class MessagesQuery(Query):
    after_version: int = Field(default=0, ge=0, le=2**53)
    limit: int = Field(default=100, ge=1, le=1000)
    min_position: str | None = Field(default=None, pattern=POSITION_PATTERN)


class ProjectsPage(Out):
    """The projects the caller may read."""

    projects: list[ProjectSummary]


# -- operations --------------------------------------------------------------------


class Health(Out):
    status: str


class Readiness(Out):
    ready: bool
    store: str
    projection: dict[str, Any] = Field(default_factory=dict)
    #: ``catching_up`` while the orchestrator reads the log after its restore point.
    orchestrator: dict[str, Any] = Field(default_factory=dict)
