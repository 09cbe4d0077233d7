"""The projections chatlog maintains by default."""

from __future__ import annotations

from chatlog.projections.base import Projection


def default_projections() -> list[Projection]:
    """Every read model ``chatlog serve`` keeps and ``chatlog rebuild`` rebuilds."""
    from chatlog.projections.conversations import ConversationsProjection

    projections: list[Projection] = [ConversationsProjection()]
    try:
        from chatlog.projections.workflows import (  # type: ignore[attr-defined, unused-ignore]
            WorkflowsProjection,
        )
    except ImportError:  # the workflow read model is not built yet in this tree
        pass
    else:
        projections.append(WorkflowsProjection())
    return projections
