"""SQLite read models built from the log.

- :class:`Projector` keeps the read models of one SQLite file up to date
  (checkpoint in the batch's transaction, catch-up then live tail, lag,
  ``wait_for`` for read-your-writes).
- :class:`ReadModel` answers the conversation queries with pydantic models
  (:mod:`chatlog.projections.models`).
- :func:`chatlog.projections.rebuild.rebuild` rebuilds every read model
  beside the live one and switches atomically; :func:`import_file` brings
  legacy JSON Lines into the log.
"""

from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.lag import PartitionLag, ProjectionLag
from chatlog.projections.legacy import ImportRejected, ImportResult, import_file
from chatlog.projections.models import (
    Message,
    MessagePage,
    ProjectSummary,
    ThreadPage,
    ThreadSummary,
)
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.projections.rebuild import BuildResult, RebuildRunning
from chatlog.projections.registry import default_projections

__all__ = [
    "BuildResult",
    "ConversationsProjection",
    "ImportRejected",
    "ImportResult",
    "Message",
    "MessagePage",
    "PartitionLag",
    "ProjectSummary",
    "ProjectionLag",
    "Projector",
    "ReadModel",
    "RebuildRunning",
    "ThreadPage",
    "ThreadSummary",
    "default_projections",
    "import_file",
]
