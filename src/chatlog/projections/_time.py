"""Times in the read models: milliseconds since the epoch, as the log's positions carry them."""

from __future__ import annotations

from datetime import UTC, datetime


def time_of(ms: int) -> datetime:
    """The UTC time of ``ms`` milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
