"""Event models: the envelope every event is stored in, and one data model per type.

Types are explicit pydantic classes registered by name. An event whose type is
not registered is still read (its ``data`` stays a plain dict), so a log
written by a newer chatlog never crashes an older reader.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from chatlog.errors import InvalidInput
from chatlog.identity import random_uuid

SCHEMA_VERSION = 1

AggregateType = Literal["thread", "workflow"]


class EventData(BaseModel):
    """Base of every per-type data model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_REGISTRY: dict[str, type[EventData]] = {}
#: ``(type, from_schema_version) -> upcaster``: small named functions that
#: lift old data to the current schema before validation.
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

D = TypeVar("D", bound=type[EventData])


def event_type(name: str) -> Callable[[D], D]:
    """Register a data model under an event type name."""

    def register(cls: D) -> D:
        if name in _REGISTRY:
            raise ValueError(f"event type {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.event_type = name  # type: ignore[attr-defined]
        return cls

    return register


def data_model(type_name: str) -> type[EventData] | None:
    return _REGISTRY.get(type_name)


def known_types() -> list[str]:
    return sorted(_REGISTRY)


def require_known_types(types: Iterable[str]) -> None:
    """Raise :class:`InvalidInput` naming the known types when one of ``types`` is not known
    (a filter on an unknown type could only match nothing, silently)."""
    known = known_types()
    unknown = sorted(set(types) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown event type{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(t) for t in unknown)}; known types: {', '.join(known)}"
        )


def upcast(type_name: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Lift ``data`` written at ``schema_version`` to the current schema."""
    while schema_version < SCHEMA_VERSION:
        step = _UPCASTERS.get((type_name, schema_version))
        if step is not None:
            data = step(data)
        schema_version += 1
    return data


class OptionalFields(EventData):
    """Event data whose optional fields are left out of the stored body while unset, so
    adding one changes no existing event's bytes (``omit_if_none`` names them)."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for name in self.omit_if_none:
            if out.get(name) is None:
                out.pop(name, None)
        return out


# -- messages ----------------------------------------------------------------


@event_type("message.appended")
class MessageAppended(OptionalFields):
    """A chat message in a thread. The event id is the message id."""

    thread_id: str
    role: str = Field(min_length=1, max_length=64)
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: When the message was written, if before it reached the log (a legacy import):
    #: the read models date it (and its thread) by this instead of the append time.
    created_at: datetime | None = None

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"created_at"})


# -- workflows ---------------------------------------------------------------


@event_type("workflow.created")
class WorkflowCreated(OptionalFields):
    """A workflow now waits for ``start_task`` until ``deadline``."""

    name: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    start_timeout: float
    deadline: datetime
    #: Seconds it may run (from start, and from each approval decision) before it times
    #: out; None: no limit.
    run_timeout: float | None = None

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"run_timeout"})


class RunDeadline(OptionalFields):
    """Data of an event after which the workflow runs: with a run timeout, until when."""

    run_timeout: float | None = None
    deadline: datetime | None = None

    omit_if_none: ClassVar[frozenset[str]] = frozenset({"run_timeout", "deadline"})


@event_type("workflow.started")
class WorkflowStarted(RunDeadline):
    """The ``start_task`` event: the workflow runs (until ``deadline``, if it has one)."""

    input: dict[str, Any] = Field(default_factory=dict)


@event_type("workflow.approval_requested")
class ApprovalRequested(EventData):
    prompt: str = ""
    approval_timeout: float
    deadline: datetime


@event_type("workflow.approved")
class WorkflowApproved(RunDeadline):
    comment: str = ""


@event_type("workflow.rejected")
class WorkflowRejected(RunDeadline):
    comment: str = ""


@event_type("workflow.completed")
class WorkflowCompleted(EventData):
    result: dict[str, Any] = Field(default_factory=dict)


@event_type("workflow.failed")
class WorkflowFailed(EventData):
    reason: str


@event_type("workflow.timed_out")
class WorkflowTimedOut(EventData):
    awaited: str
    waited: float
    reason: str


@event_type("workflow.cancelled")
class WorkflowCancelled(EventData):
    reason: str = ""


# -- jobs (their aggregate is the workflow they belong to) ---------------------


@event_type("job.enqueued")
class JobEnqueued(EventData):
    job_id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    max_deliveries: int


@event_type("job.started")
class JobStarted(EventData):
    job_id: str
    worker: str
    delivery: int


@event_type("job.completed")
class JobCompleted(EventData):
    job_id: str
    worker: str
    result: dict[str, Any] = Field(default_factory=dict)


@event_type("job.failed")
class JobFailed(EventData):
    job_id: str
    worker: str
    error: str
    delivery: int


@event_type("job.reclaimed")
class JobReclaimed(EventData):
    job_id: str
    worker: str
    previous_worker: str
    delivery: int


@event_type("job.dead_lettered")
class JobDeadLettered(EventData):
    job_id: str
    deliveries: int
    reason: str


# -- envelopes ----------------------------------------------------------------


class NewEvent(BaseModel):
    """An event to append: everything but what the log assigns (version, position, time)."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=random_uuid)
    #: True when the caller chose ``id``: a retry with it appends nothing.
    id_supplied: bool = False
    type: str
    project: uuid.UUID
    project_name: str
    aggregate_type: AggregateType
    aggregate_id: str
    data: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(
        cls,
        data: EventData,
        *,
        project: uuid.UUID,
        project_name: str,
        aggregate_type: AggregateType,
        aggregate_id: str,
        event_id: uuid.UUID | None = None,
    ) -> NewEvent:
        """Build an event from a typed data model."""
        return cls(
            id=event_id or random_uuid(),
            id_supplied=event_id is not None,
            type=data.event_type,  # type: ignore[attr-defined]
            project=project,
            project_name=project_name,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            data=data.model_dump(mode="json"),
        )

    @property
    def aggregate(self) -> str:
        return aggregate_key(self.project, self.aggregate_type, self.aggregate_id)


class RecordedEvent(BaseModel):
    """An event as stored: the envelope with its version, position and time."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str
    project: uuid.UUID
    project_name: str
    aggregate_type: str
    aggregate_id: str
    version: int
    partition: int
    #: The Redis stream entry id: the event's position in its partition.
    position: str
    time: datetime
    data: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    def typed_data(self) -> EventData | None:
        """The data validated by its type's model; None for unknown types."""
        model = data_model(self.type)
        if model is None:
            return None
        return model.model_validate(upcast(self.type, self.schema_version, self.data))


def aggregate_key(project: uuid.UUID, aggregate_type: str, aggregate_id: str) -> str:
    return f"{project}/{aggregate_type}/{aggregate_id}"


def position_time(position: str) -> datetime:
    """The server time of a position: its stream id's millisecond part."""
    return datetime.fromtimestamp(int(position.split("-", 1)[0]) / 1000, tz=UTC)
