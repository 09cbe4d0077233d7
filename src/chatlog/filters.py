"""Checks of what a client filters on, against chatlog's vocabulary (:mod:`chatlog.events`)."""

from __future__ import annotations

from collections.abc import Iterable

from chatlog.errors import InvalidInput
from chatlog.events import known_types


def require_known_types(types: Iterable[str]) -> None:
    """Raise :class:`InvalidInput` naming the known types when one of ``types`` is not known
    (a filter on an unknown type could only match nothing, silently)."""
    known = known_types()
    unknown = sorted(set(types) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown event type{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(t) for t in unknown)}; known types: {', '.join(known)}"
        )
