"""``POST /v1/projects/{project}/messages``: append a chat message."""

from __future__ import annotations

import orjson
from aiohttp import web

from chatlog.errors import IdempotencyConflict
from chatlog.events import SCHEMA_VERSION, MessageAppended, NewEvent, RecordedEvent
from chatlog.eventstore import AppendResult, EventStore
from chatlog.http._routing import Endpoint, read_body
from chatlog.http._state import state
from chatlog.http.models import MessageAccepted, PostMessage
from chatlog.identity import normalize_thread_id, random_uuid

MESSAGE_TYPE = MessageAppended.event_type


def _before(position: str) -> str:
    ms, seq = (int(x) for x in position.split("-", 1))
    return f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-{2**64 - 1}"


async def _original(store: EventStore, result: AppendResult) -> RecordedEvent | None:
    """The event a duplicate append points at (None when it was trimmed since)."""
    events = await store.read(result.partition, _before(result.position), 1)
    return events[0] if events and events[0].position == result.position else None


async def post_message(request: web.Request) -> web.Response:
    """Append a message; a new thread when ``thread_id`` is null in any spelling.

    201 with what the log assigned. A retry with an ``event_id`` that was
    appended before writes nothing and answers 200 with the original answer.
    """
    st = state(request)
    project = st.authorized_project(request, write=True)
    body = await read_body(request, PostMessage)
    thread_id, _ = normalize_thread_id(body.thread_id)
    # The body was validated by PostMessage, whose rules include MessageAppended's
    # (role 1..64 characters, metadata a JSON object), so the event is built
    # without validating the same fields a second time on the hot path.
    event = NewEvent.model_construct(
        id=body.event_id or random_uuid(),
        id_supplied=body.event_id is not None,
        type=MESSAGE_TYPE,
        project=project.key,
        project_name=project.display,
        aggregate_type="thread",
        aggregate_id=thread_id,
        data={"thread_id": thread_id, "role": body.role, "content": body.content,
              "metadata": body.metadata},
        schema_version=SCHEMA_VERSION,
    )
    result = await st.store.append_one(event, expected_version=body.expected_version)
    project_name = project.display
    if result.duplicate:
        original = await _original(st.store, result)
        if original is not None:
            if original.project != project.key or original.type != "message.appended":
                raise IdempotencyConflict(
                    f"event_id {result.event_id} was already used for another event; "
                    "use a new event_id for a new message"
                )
            thread_id = original.aggregate_id
            project_name = original.project_name
    (st.metrics.duplicates if result.duplicate else st.metrics.created).inc()
    # The documented shape is MessageAccepted (tests check the answers against
    # it); written directly, as this is the hottest path of the API.
    answer = {
        "message_id": str(event.id),
        "thread_id": thread_id,
        "project": str(project.key),
        "project_name": project_name,
        "partition": result.partition,
        "position": result.position,
        "version": result.version,
        "duplicate": result.duplicate,
    }
    return web.Response(status=200 if result.duplicate else 201, body=orjson.dumps(answer),
                        content_type="application/json")


ENDPOINTS = [
    Endpoint(
        "POST", "/v1/projects/{project}/messages", post_message,
        "Append a chat message", "messages",
        body=PostMessage,
        responses={
            201: (MessageAccepted, "Appended"),
            200: (MessageAccepted, "A retry of an event_id appended before: nothing new written"),
        },
        errors=(409,),
        description=(
            "`thread_id` null, \"\", \"null\", \"none\" or \"undefined\" starts a new thread "
            "`thread-<uuid4>`; the answer names it. `expected_version` makes the append "
            "conditional (409 with the current version)."
        ),
    ),
]
