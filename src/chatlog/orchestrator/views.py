"""What the orchestrator answers: a workflow's state, deadline and history (a pydantic model)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from chatlog.big_events import merged
from chatlog.events import RecordedEvent
from chatlog.orchestrator.machine import WorkflowState
from chatlog.projections.models import WorkflowSummary


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


class WorkflowView(WorkflowSummary):
    """A workflow as the API shows it: the list's fields, then its input, result and history."""

    input: dict[str, Any]
    result: dict[str, Any] | None
    history: list[HistoryEntry]

    @classmethod
    async def build(cls, project: uuid.UUID, state: WorkflowState) -> WorkflowView:
        """:meth:`of`, a big input first merged with its start's input in the worker process."""
        if state.input_update is not None:
            state.input = await merged(state.input, state.input_update)  # type: ignore[assignment]
            state.input_update = None
        return cls.of(project, state)

    @classmethod
    def of(cls, project: uuid.UUID, state: WorkflowState) -> WorkflowView:
        """The view of a workflow folded from at least one event (its input merged)."""
        if state.input_update is not None:
            raise ValueError(f"workflow {state.id}: its input is merged by build(), not of()")
        if state.position is None or state.created_at is None or state.updated_at is None:
            raise ValueError(f"workflow {state.id} has no events to show")
        # A big input or result as an orjson.Fragment (issue 15 #9) is written, not validated.
        big = isinstance(state.input, orjson.Fragment) or isinstance(state.result, orjson.Fragment)
        make: Any = cls.model_construct if big else cls
        return make(  # type: ignore[no-any-return]
            workflow_id=state.id,
            project=project,
            project_name=state.project_name,
            name=state.name,
            state=state.state.value,
            awaiting=state.awaiting,
            deadline=state.deadline,
            reason=state.reason,
            version=state.version,
            position=state.position,
            created_at=state.created_at,
            updated_at=state.updated_at,
            jobs=state.jobs,
            timed_out=any(e.type == "workflow.timed_out" for e in state.history),
            input=state.input,
            result=state.result,
            history=[HistoryEntry.of(e) for e in state.history],
        )
