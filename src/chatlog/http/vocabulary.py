"""``GET /v1/vocabulary``: the event types and workflow states this server knows.

The console (and any client) reads its lists from here rather than keeping
copies: they come from :mod:`chatlog.events`, the one place they are defined.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from chatlog.events import TERMINAL, WORKFLOW_STATES, known_types
from chatlog.http._routing import Endpoint, json_response
from chatlog.http.models import Out


class Vocabulary(Out):
    """The words of this server's log."""

    event_types: list[str] = Field(description="Every event type, sorted")
    workflow_states: list[str] = Field(
        description="Every state a workflow can be seen in, in the order of its life")
    terminal_states: list[str] = Field(description="The states a workflow never leaves")


def vocabulary_document() -> Vocabulary:
    """The vocabulary as :mod:`chatlog.events` defines it."""
    return Vocabulary(
        event_types=known_types(),
        workflow_states=[s.value for s in WORKFLOW_STATES],
        terminal_states=[s.value for s in WORKFLOW_STATES if s in TERMINAL],
    )


async def vocabulary(request: web.Request) -> web.Response:
    """The event types, workflow states and terminal states (no token needed)."""
    return json_response(vocabulary_document())


ENDPOINTS = [
    Endpoint("GET", "/v1/vocabulary", vocabulary, "Event types and workflow states", "operations",
             auth=False, responses={200: (Vocabulary, "The server's vocabulary")}),
]
