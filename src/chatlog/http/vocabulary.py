"""``GET /v1/vocabulary``: the event types and workflow states, from their one home.

The console reads these instead of keeping copies of its own.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from chatlog.events import known_types
from chatlog.http._routing import Endpoint, json_response
from chatlog.http.models import Out
from chatlog.orchestrator.machine import STATE_AFTER, TERMINAL


class Vocabulary(Out):
    event_types: list[str] = Field(description="Every event type this server knows")
    workflow_states: list[str] = Field(description="The states a workflow can be in, in order")
    terminal_states: list[str] = Field(description="States nothing follows")


def vocabulary_document() -> Vocabulary:
    states = list(dict.fromkeys(str(s) for s in STATE_AFTER.values()))
    return Vocabulary(
        event_types=known_types(), workflow_states=states,
        terminal_states=[s for s in states if s in TERMINAL],
    )


async def get_vocabulary(request: web.Request) -> web.Response:
    """Event types, workflow states and which of them are terminal."""
    return json_response(vocabulary_document())


ENDPOINTS = [
    Endpoint("GET", "/v1/vocabulary", get_vocabulary, "Event types and workflow states",
             "operations", auth=False,
             responses={200: (Vocabulary, "The vocabulary")}),
]
