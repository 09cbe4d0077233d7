"""Small builders shared by the tests."""

from __future__ import annotations

import uuid

from chatlog.events import MessageAppended, NewEvent
from chatlog.identity import normalize_project_id


def message(
    project: str = "Blog-Project",
    thread_id: str = "thread-1",
    content: str = "hello",
    *,
    role: str = "user",
    event_id: uuid.UUID | None = None,
) -> NewEvent:
    key = normalize_project_id(project)
    return NewEvent.of(
        MessageAppended(thread_id=thread_id, role=role, content=content),
        project=key.key,
        project_name=key.display,
        aggregate_type="thread",
        aggregate_id=thread_id,
        event_id=event_id,
    )
