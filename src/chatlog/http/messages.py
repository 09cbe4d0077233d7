"""``POST /v1/projects/{project}/messages``: append a chat message."""

from __future__ import annotations

import functools
import hashlib

import orjson
from aiohttp import web

from chatlog import offload
from chatlog.event_build import construct
from chatlog.events import SCHEMA_VERSION, MessageAppended, NewEvent, RecordedEvent
from chatlog.eventstore import AppendResult, EventStore
from chatlog.eventstore.codec import position_before
from chatlog.http._big_json import read_big
from chatlog.http._routing import Endpoint, read_raw_body, validate_body
from chatlog.http._state import state
from chatlog.http.models import MessageAccepted, PostMessage
from chatlog.identity import new_thread_id, normalize_thread_id, random_uuid

MESSAGE_TYPE = MessageAppended.event_type


#: A project key's text (a UUID's ``str`` is a microsecond; the same few projects
#: are written to on every request).
_key_text = functools.lru_cache(maxsize=4096)(str)


async def _original(store: EventStore, result: AppendResult) -> RecordedEvent | None:
    """The event a duplicate append points at (None when it was trimmed since)."""
    events = await store.read(result.partition, position_before(result.position), 1)
    return events[0] if events and events[0].position == result.position else None


def message_digest(body: PostMessage, thread_id: str | None,
                   metadata_json: bytes | None = None) -> str:
    """The content an ``event_id`` stands for: what the client sent (a new thread as
    "new", since each try of it makes another thread id). ``metadata_json``: the
    metadata's JSON with sorted keys, when it is known already (a big body's)."""
    # One buffer hashed once: the same bytes (so the same digest, which id records
    # keep across versions) as one update per part, in a third of the time.
    head = f"{MESSAGE_TYPE}\0{thread_id or ''}\0{body.role}\0{body.content}\0".encode()
    return hashlib.blake2b(
        head + (metadata_json if metadata_json is not None
                else orjson.dumps(body.metadata, option=orjson.OPT_SORT_KEYS)),
        digest_size=12,
    ).hexdigest()


async def post_message(request: web.Request) -> web.Response:
    """Append a message; a new thread when ``thread_id`` is null in any spelling.

    201 with what the log assigned. A retry with an ``event_id`` that was
    appended before writes nothing and answers 200 with the original answer;
    the same ``event_id`` with other content is a 409. When the store does not
    answer in time, 504 "outcome unknown" names the ``event_id`` to retry with.
    """
    st = state(request)
    project = st.authorized_project(request, write=True)
    raw = await read_raw_body(request)
    metadata_json: bytes | None = None
    if len(raw) >= offload.BIG:  # parsed and checked in the worker process
        body, blobs = await read_big(PostMessage, raw, ("metadata",))
        metadata_json = blobs["metadata"]
    else:
        body = validate_body(raw, PostMessage)
    if body.thread_id is None:  # the common spelling of a new thread, without the checks
        thread_id, new_thread = new_thread_id(), True
    else:
        thread_id, new_thread = normalize_thread_id(body.thread_id)
    # The body was validated by PostMessage, whose rules include MessageAppended's
    # (role 1..64 characters, metadata a JSON object), so the event is built
    # without validating the same fields a second time on the hot path.
    event = construct(NewEvent, {  # every field, as model_construct without its loop
        "id": body.event_id or random_uuid(),
        "id_supplied": body.event_id is not None,
        "type": MESSAGE_TYPE,
        "project": project.key,
        "project_name": project.display,
        "aggregate_type": "thread",
        "aggregate_id": thread_id,
        "data": {"thread_id": thread_id, "role": body.role, "content": body.content,
                 "metadata": body.metadata},
        "schema_version": SCHEMA_VERSION,
        "blob": None,
    })
    result = await st.store.append_one(
        event, expected_version=body.expected_version,
        digest=message_digest(body, None if new_thread else thread_id, metadata_json),
    )
    project_name = project.display
    if result.duplicate:
        original = await _original(st.store, result)
        if original is not None:
            thread_id = original.aggregate_id
            project_name = original.project_name
    (st.metrics.duplicates if result.duplicate else st.metrics.created).inc()
    # The documented shape is MessageAccepted (tests check the answers against
    # it); written directly, as this is the hottest path of the API.
    answer = {
        "message_id": result.event_id,  # str(event.id), formatted once by the store
        "thread_id": thread_id,
        "project": _key_text(project.key),
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
        errors=(409, 504),
        description=(
            "`thread_id` null, \"\", \"null\", \"none\" or \"undefined\" starts a new thread "
            "`thread-<uuid4>`; the answer names it. `expected_version` makes the append "
            "conditional (409 with the current version)."
        ),
    ),
]
