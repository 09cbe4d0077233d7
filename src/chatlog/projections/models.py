"""What the read API returns (the HTTP layer uses these as response schemas)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProjectSummary(_Model):
    """A project: its key, the first name it was given, and its activity."""

    project: uuid.UUID = Field(description="The normalised project key")
    name: str = Field(description="The raw name as first given (for display)")
    thread_count: int
    message_count: int
    created_at: datetime
    updated_at: datetime
    workflow_count: int = Field(default=0, description="Workflows created in the project")
    last_activity_at: datetime | None = Field(
        default=None, description="The last message or workflow change")


class ThreadSummary(_Model):
    """One conversation of the list: counts, the last message and when it came."""

    project: uuid.UUID
    thread_id: str
    message_count: int
    last_version: int = Field(description="Version of the thread's last message")
    created_at: datetime
    updated_at: datetime
    last_message_id: uuid.UUID
    last_role: str
    last_preview: str = Field(description="The start of the last message")


class ThreadPage(_Model):
    """A page of the conversation list, newest first."""

    threads: list[ThreadSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor for the next page; null on the last page")


class Message(_Model):
    """A message of a thread."""

    message_id: uuid.UUID
    project: uuid.UUID
    thread_id: str
    version: int = Field(description="Position of the message in its thread (1, 2, 3 ...)")
    role: str
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    position: str = Field(description="The event's position in the log")


class MessagePage(_Model):
    """A page of a thread's messages, in order."""

    messages: list[Message]
    next_after_version: int | None = Field(
        default=None,
        description="Pass as after_version for the next page; null when this page is the last")


class WorkflowSummary(_Model):
    """A workflow: where it stands, what it waits for until when, and how far it got.

    The list of a project's workflows answers these; one workflow read
    (:class:`chatlog.orchestrator.WorkflowView`) adds its input, result and history.
    """

    workflow_id: str
    project: uuid.UUID = Field(description="The normalised project key")
    project_name: str = Field(description="The project name as first given")
    name: str
    state: str
    awaiting: str | None = Field(description="What the current wait awaits: start_task, "
                                             "approval or null")
    deadline: datetime | None = Field(description="When the current wait ends (null unless "
                                                  "waiting for start or approval)")
    reason: str | None = Field(description="Why it failed, timed out or was cancelled")
    version: int
    position: str = Field(description="Position of the workflow's latest event in its "
                                      "partition")
    created_at: datetime
    updated_at: datetime
    jobs: int = Field(description="Jobs enqueued for it")


class WorkflowsPage(_Model):
    """A page of a project's workflows, most recently changed first."""

    workflows: list[WorkflowSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor for the next page; null on the last page")
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="Workflows per state (with the name and id search, without `state`)")
