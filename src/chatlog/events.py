"""Event models: the envelope every event is stored in, and one data model per type.

Types are explicit pydantic classes, each naming its type in a ``ClassVar``;
defining the class registers it. An event whose type is not registered is
still read (its ``data`` stays a plain dict), so a log written by a newer
chatlog never crashes an older reader.

This module is chatlog's vocabulary: every event type, every workflow state,
the state each workflow event leads to, what a waiting state awaits, and the
states a workflow never leaves. The orchestrator, the projections, the HTTP
API and (through ``GET /v1/vocabulary``) the console read them from here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from chatlog.event_build import new_event_of
from chatlog.identity import random_uuid

SCHEMA_VERSION = 1

#: What an event belongs to: a chat thread, a workflow, or the records of an
#: integration (a LangGraph thread's checkpoints, an ``eventsourcing`` application),
#: or an erasure (its tombstone).
AggregateType = Literal["thread", "workflow", "langgraph", "eventsourcing", "erasure"]


class State(StrEnum):
    """Where a workflow stands."""

    CREATED = "created"  # nothing appended yet: the only state ``create`` applies to
    WAITING_FOR_START = "waiting_for_start"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # transient: always followed by ``failed`` in the same append
    CANCELLED = "cancelled"


#: States a workflow never leaves.
TERMINAL: frozenset[State] = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
#: States that wait for an outside event until a deadline, and what they await. The
#: running states have a deadline only when the workflow has a run timeout.
AWAITED: dict[State, str] = {
    State.WAITING_FOR_START: "start_task", State.AWAITING_APPROVAL: "approval",
    State.RUNNING: "completion", State.APPROVED: "completion", State.REJECTED: "completion",
}

_REGISTRY: dict[str, type[EventData]] = {}
#: ``(type, from_schema_version) -> upcaster``: small named functions that
#: lift old data to the current schema before validation.
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class EventData(BaseModel):
    """Base of every per-type data model.

    A subclass names its type in ``event_type`` (which registers it) and, for
    a workflow transition, the state it leads to in ``state_after``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The type name events of this model are stored under.
    event_type: ClassVar[str]
    #: The workflow state this event leads to; None: it leaves the state alone.
    state_after: ClassVar[State | None] = None
    #: The kind of aggregate events of this type belong to.
    aggregate_type: ClassVar[AggregateType]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.__dict__.get("event_type")
        if name is None:
            return  # a family base (ThreadEvent, WorkflowEvent), not a type
        if name in _REGISTRY:
            raise ValueError(f"event type {name!r} is registered twice")
        _REGISTRY[name] = cls


class ThreadEvent(EventData):
    """Base of the event types of a thread (a conversation)."""

    aggregate_type: ClassVar[AggregateType] = "thread"


class WorkflowEvent(EventData):
    """Base of the event types of a workflow: its transitions and its jobs' lifecycle."""

    aggregate_type: ClassVar[AggregateType] = "workflow"


def data_model(type_name: str) -> type[EventData] | None:
    return _REGISTRY.get(type_name)


def known_types() -> list[str]:
    """Every registered event type, sorted."""
    return sorted(_REGISTRY)


def types_of(aggregate_type: AggregateType) -> frozenset[str]:
    """The registered event types whose events belong to ``aggregate_type`` aggregates."""
    return frozenset(n for n, m in _REGISTRY.items() if m.aggregate_type == aggregate_type)


def upcast(type_name: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Lift ``data`` written at ``schema_version`` to the current schema."""
    while schema_version < SCHEMA_VERSION:
        step = _UPCASTERS.get((type_name, schema_version))
        if step is not None:
            data = step(data)
        schema_version += 1
    return data


class OptionalFields(EventData):
    """Event data whose ``omit_if_none`` fields stay out of the stored body while unset."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @pydantic.model_serializer(mode="wrap")
    def _without_unset(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for name in self.omit_if_none:
            if out.get(name) is None:
                out.pop(name, None)
        return out


class RunDeadline(OptionalFields):
    """Data of an event after which the workflow runs: with a run timeout, until when."""

    run_timeout: float | None = None
    deadline: datetime | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"run_timeout", "deadline"})


# -- messages ----------------------------------------------------------------


class MessageAppended(OptionalFields, ThreadEvent):
    """A chat message in a thread. The event id is the message id."""

    event_type: ClassVar[str] = "message.appended"

    thread_id: str
    role: str = Field(min_length=1, max_length=64)
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: When it was written, if before it reached the log (an import): the read models' date.
    created_at: datetime | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"created_at"})


# -- workflows ---------------------------------------------------------------


class WorkflowCreated(OptionalFields, WorkflowEvent):
    """A workflow now waits for ``start_task`` until ``deadline``."""

    event_type: ClassVar[str] = "workflow.created"
    state_after: ClassVar[State | None] = State.WAITING_FOR_START

    name: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    start_timeout: float
    deadline: datetime
    #: Seconds it may run (from start, and from each approval decision); None: no limit.
    run_timeout: float | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"run_timeout"})


class WorkflowStarted(RunDeadline, WorkflowEvent):
    """The ``start_task`` event: the workflow runs (until ``deadline``, if it has one)."""

    event_type: ClassVar[str] = "workflow.started"
    state_after: ClassVar[State | None] = State.RUNNING

    input: dict[str, Any] = Field(default_factory=dict)


class ApprovalRequested(WorkflowEvent):
    event_type: ClassVar[str] = "workflow.approval_requested"
    state_after: ClassVar[State | None] = State.AWAITING_APPROVAL

    prompt: str = ""
    approval_timeout: float
    deadline: datetime


class WorkflowApproved(RunDeadline, WorkflowEvent):
    event_type: ClassVar[str] = "workflow.approved"
    state_after: ClassVar[State | None] = State.APPROVED

    comment: str = ""


class WorkflowRejected(RunDeadline, WorkflowEvent):
    event_type: ClassVar[str] = "workflow.rejected"
    state_after: ClassVar[State | None] = State.REJECTED

    comment: str = ""


class WorkflowCompleted(WorkflowEvent):
    event_type: ClassVar[str] = "workflow.completed"
    state_after: ClassVar[State | None] = State.COMPLETED

    result: dict[str, Any] = Field(default_factory=dict)


class WorkflowFailed(WorkflowEvent):
    event_type: ClassVar[str] = "workflow.failed"
    state_after: ClassVar[State | None] = State.FAILED

    reason: str


class WorkflowTimedOut(WorkflowEvent):
    event_type: ClassVar[str] = "workflow.timed_out"
    state_after: ClassVar[State | None] = State.TIMED_OUT

    awaited: str
    waited: float
    reason: str


class WorkflowCancelled(WorkflowEvent):
    event_type: ClassVar[str] = "workflow.cancelled"
    state_after: ClassVar[State | None] = State.CANCELLED

    reason: str = ""


# -- jobs (their aggregate is the workflow they belong to) ---------------------


class JobEnqueued(WorkflowEvent):
    event_type: ClassVar[str] = "job.enqueued"

    job_id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    max_deliveries: int


class JobStarted(WorkflowEvent):
    event_type: ClassVar[str] = "job.started"

    job_id: str
    worker: str
    delivery: int


class JobCompleted(WorkflowEvent):
    event_type: ClassVar[str] = "job.completed"

    job_id: str
    worker: str
    result: dict[str, Any] = Field(default_factory=dict)


class JobFailed(WorkflowEvent):
    event_type: ClassVar[str] = "job.failed"

    job_id: str
    worker: str
    error: str
    delivery: int


class JobReclaimed(WorkflowEvent):
    event_type: ClassVar[str] = "job.reclaimed"

    job_id: str
    worker: str
    previous_worker: str
    delivery: int


class JobDeadLettered(WorkflowEvent):
    event_type: ClassVar[str] = "job.dead_lettered"

    job_id: str
    deliveries: int
    reason: str


# -- integrations (their payloads are bytes: the event's ``blob``) --------------


class LangGraphEvent(EventData):
    """Base of the event types of a LangGraph checkpoint (and the writes against it)."""

    aggregate_type: ClassVar[AggregateType] = "langgraph"


class EventsourcingEvent(EventData):
    """Base of the event types an ``eventsourcing`` application's recorders store."""

    aggregate_type: ClassVar[AggregateType] = "eventsourcing"


class LangGraphCheckpoint(LangGraphEvent):
    """A LangGraph checkpoint; the checkpoint and its metadata are in the blob."""

    event_type: ClassVar[str] = "langgraph.checkpoint"

    thread_id: str
    ns: str
    checkpoint_id: str
    parent_id: str | None = None
    #: The serializer's type tag of the blob (``msgpack``, ``pickle``...).
    serde: str


class LangGraphWrites(LangGraphEvent):
    """Pending writes of one task against a checkpoint; their values in the blob."""

    event_type: ClassVar[str] = "langgraph.writes"

    thread_id: str
    ns: str
    checkpoint_id: str
    task_id: str
    task_path: str = ""
    idx: list[int]
    channels: list[str]
    serde: str


class EventsourcingRecorded(EventsourcingEvent):
    """A stored event of an ``eventsourcing`` application; its state in the blob."""

    event_type: ClassVar[str] = "eventsourcing.recorded"

    recorder: str
    originator_id: str
    originator_version: int
    topic: str
    #: The application's notification id (application recorders only).
    notification_id: int | None = None


class EventsourcingTracked(EventsourcingEvent):
    """A tracking record: ``notification_id`` of ``upstream`` was processed."""

    event_type: ClassVar[str] = "eventsourcing.tracked"

    recorder: str
    upstream: str
    notification_id: int


# -- erasure -----------------------------------------------------------------------


class ErasureRecorded(EventData):
    """The tombstone of an erasure: a project's or a thread's events before this one
    were erased from every tier. It carries no content, only who asked, when, and what.

    Its aggregate is the erasure (``erasure/<erasure_id>`` in the erased project), so
    the erasure never erases its own tombstone. Projections delete the scope's rows
    when they apply it, so a rebuild or another node's read model converges.
    """

    event_type: ClassVar[str] = "erasure.recorded"
    aggregate_type: ClassVar[AggregateType] = "erasure"

    erasure_id: str
    #: ``project``; ``thread`` (``thread_id``); ``aggregates``: those whose key after
    #: ``<project>/`` starts with ``aggregates`` (an integration's, e.g. a LangGraph thread).
    scope: Literal["project", "thread", "aggregates"]
    thread_id: str | None = None
    aggregates: str | None = None
    #: The scope's events when the tombstone was appended (hot and archived).
    events: int = 0
    requested_by: str = ""
    requested_at: datetime


# -- the workflow state table, from the types above ---------------------------------

#: The state a workflow event leads to. Events not listed leave the state alone.
STATE_AFTER: dict[str, State] = {
    name: model.state_after
    for name, model in _REGISTRY.items()
    if model.state_after is not None
}
#: The states a workflow can be seen in (every state an event leads to), in order.
WORKFLOW_STATES: tuple[State, ...] = tuple(s for s in State if s in STATE_AFTER.values())


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
    #: A binary payload stored as raw bytes beside ``data`` (no base64 in the log).
    blob: bytes | None = None

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
        blob: bytes | None = None,
    ) -> NewEvent:
        """Build an event from a typed data model (validated only where the arguments
        are not of their fields' types: :mod:`chatlog.event_build`)."""
        return new_event_of(cls, data, project, project_name, aggregate_type, aggregate_id,
                            event_id, blob)

    @property
    def aggregate(self) -> str:
        return aggregate_key(self.project, self.aggregate_type, self.aggregate_id)


class RecordedEvent(BaseModel):
    """An event as stored: the envelope with its version, position and time."""

    # A blob is base64url in JSON (HTTP replay, SSE); it is raw bytes in the log.
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

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
    #: The binary payload of an integration's event (absent from JSON when there is none).
    blob: bytes | None = Field(default=None, exclude_if=lambda v: v is None)

    def typed_data(self) -> EventData | None:
        """The data validated by its type's model; None for unknown types."""
        model = data_model(self.type)
        if model is None:
            return None
        return model.model_validate(upcast(self.type, self.schema_version, self.data))


def aggregate_key(project: uuid.UUID, aggregate_type: str, aggregate_id: str) -> str:
    return f"{project}/{aggregate_type}/{aggregate_id}"


def time_of(ms: int) -> datetime:
    """The UTC time of ``ms`` milliseconds since the epoch (how the log and the
    read models keep times)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def position_time(position: str) -> datetime:
    """The server time of a position: its stream id's millisecond part."""
    return time_of(int(position.split("-", 1)[0]))
