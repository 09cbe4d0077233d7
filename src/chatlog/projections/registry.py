"""The projections chatlog maintains by default."""

from __future__ import annotations

from chatlog.projections.base import Projection


def default_projections() -> list[Projection]:
    from chatlog.projections.conversations import ConversationsProjection
    from chatlog.projections.workflows import WorkflowsProjection

    return [ConversationsProjection(), WorkflowsProjection()]
