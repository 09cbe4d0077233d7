"""What every projection is: schema, indexes, and how it applies a batch of events."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from chatlog.events import RecordedEvent


class Projection(Protocol):
    """A read model built from the log.

    The projector calls ``apply`` inside its transaction, together with the
    checkpoint update, so a batch and its checkpoint commit or roll back as one.
    ``apply`` must be deterministic: an incremental build equals a rebuild.
    """

    #: Short unique name (used in table names and counters).
    name: str

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables (``IF NOT EXISTS``); no secondary indexes."""

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        """Create every index the read queries need (``IF NOT EXISTS``).

        Kept apart from the tables so a rebuild can bulk-load first and index after.
        """

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply ``events`` (in log order) to the tables. Unknown types are ignored."""
