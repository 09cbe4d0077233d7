"""What the orchestrator answers: a workflow's state, deadline and history (a pydantic model)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from chatlog.events import RecordedEvent
from chatlog.orchestrator.machine import WorkflowState


class HistoryEntry(BaseModel):
    """One event of a workflow's history (workflow transitions and job lifecycle)."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str
    version: int
    position: str
    time: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: RecordedEvent) -> HistoryEntry:
        return cls(
            id=event.id,
            type=event.type,
            version=event.version,
            position=event.position,
            time=event.time,
            data=event.data,
        )


class WorkflowView(BaseModel):
    """A workflow as the API shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    #: The normalised project key.
    project: uuid.UUID
    #: The project name as first given.
    project_name: str
    name: str
    state: str
    #: When the current wait ends (null unless waiting for start or approval).
    deadline: datetime | None
    #: What the current wait awaits: ``start_task``, ``approval`` or null.
    awaiting: str | None
    version: int
    #: Position of the workflow's latest event in its partition.
    position: str | None
    input: dict[str, Any]
    result: dict[str, Any] | None
    #: Why it failed, timed out or was cancelled.
    reason: str | None
    #: It ended because a wait timed out (it is ``failed``; ``reason`` says what it awaited).
    timed_out: bool = False
    history: list[HistoryEntry]

    @classmethod
    def of(cls, project: uuid.UUID, state: WorkflowState) -> WorkflowView:
        return cls(
            id=state.id,
            project=project,
            project_name=state.project_name,
            name=state.name,
            state=state.state.value,
            deadline=state.deadline,
            awaiting=state.awaiting,
            version=state.version,
            position=state.position,
            input=state.input,
            result=state.result,
            reason=state.reason,
            timed_out=any(e.type == "workflow.timed_out" for e in state.history),
            history=[HistoryEntry.of(e) for e in state.history],
        )
