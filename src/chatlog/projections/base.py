"""What every projection is: its event types, schema, indexes, and how it applies events.

Two protocols, both checked at run time by the projector and the rebuild:

- :class:`Projection`: every read model. The live projector hands it the
  decoded events of its ``event_types``, in log order.
- :class:`BulkProjection`: a projection that can also fold undecoded stream
  entries (the rebuild's fast path). Its fold must give the same tables as
  ``apply`` for every event type (``tests/projections/test_contract.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from chatlog.events import RecordedEvent

#: A stream entry as XRANGE returns it: ``(position, [field, value, ...])``.
RawEntry = tuple[bytes, list[bytes]]


@runtime_checkable
class Projection(Protocol):
    """A read model built from the log.

    The projector calls ``apply`` inside its transaction, together with the
    checkpoint update, so a batch and its checkpoint commit or roll back as one.
    ``apply`` must be deterministic: an incremental build equals a rebuild.
    """

    #: Short unique name (used in table names and counters).
    name: str
    #: The event types this projection reads; the projector passes it no others.
    event_types: frozenset[str]

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables (``IF NOT EXISTS``); no secondary indexes."""

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        """Create every index the read queries need (``IF NOT EXISTS``).

        Kept apart from the tables so a rebuild can bulk-load first and index after.
        """

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply ``events`` (in log order, all of ``event_types``) to the tables."""


class BulkFold(Protocol):
    """A fold of undecoded stream entries, chunk by chunk (pure Python: no connection)."""

    def rows(self, entries: Iterable[RawEntry]) -> list[tuple[Any, ...]]:
        """Rows to write for one chunk of entries (every type: the fold filters)."""

    def final(self) -> Any:
        """What is left to write once every chunk was folded (aggregates)."""


@runtime_checkable
class BulkProjection(Projection, Protocol):
    """A projection the rebuild loads from undecoded entries, without ``apply``."""

    def bulk_fold(self) -> BulkFold:
        """A fresh fold (picklable: it may run in another process)."""

    def bulk_write(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Write one chunk's rows (in log order, into tables without indexes yet)."""

    def bulk_finish(self, conn: sqlite3.Connection, final: Any) -> None:
        """Write what :meth:`BulkFold.final` returned."""
