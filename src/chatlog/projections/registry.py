"""The projections chatlog maintains by default."""

from __future__ import annotations

from chatlog.projections.base import Projection
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.workflows import WorkflowsProjection


def default_projections() -> list[Projection]:
    """Every read model ``chatlog serve`` keeps and ``chatlog rebuild`` rebuilds."""
    return [ConversationsProjection(), WorkflowsProjection()]
