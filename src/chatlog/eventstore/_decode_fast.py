"""Two parts of decoding an entry made cheaper: its event id's UUID, and its time.

``uuid.UUID(text)`` strips prefixes and braces and checks its arguments in Python
(~2 us); the id an entry carries is the 36 characters ``str(UUID)`` wrote, so its
32 hex digits make the UUID directly (anything else goes through ``uuid.UUID``,
which raises as before). An entry's time is its position's millisecond part: the
events of one group commit share their millisecond, so the last one's
``datetime`` (immutable) is kept and reused.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from chatlog.events import time_of

_new_uuid = uuid.UUID.__new__
_set_slot = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_last_time: tuple[int, datetime] = (-1, time_of(0))


def event_uuid(raw: bytes) -> uuid.UUID:
    """The UUID of an entry's ``i`` field (``str(UUID)`` as bytes)."""
    if len(raw) == 36 and raw[8:9] == raw[13:14] == raw[18:19] == raw[23:24] == b"-":
        digits = raw.replace(b"-", b"")
        try:  # 32 digits, as uuid.UUID asks (an extra '-' left 31, which int() took)
            value = int(digits, 16) if len(digits) == 32 else -1
        except ValueError:
            value = -1
        if value >= 0:
            made = _new_uuid(uuid.UUID)
            _set_slot(made, "int", value)
            _set_slot(made, "is_safe", _UNKNOWN_SAFETY)
            return made
    return uuid.UUID(raw.decode())


def position_time(position: str) -> datetime:
    """The time of a position (:func:`chatlog.events.position_time`), the last one's
    ``datetime`` reused for the same millisecond."""
    global _last_time
    ms = int(position.split("-", 1)[0])
    last_ms, last = _last_time
    if ms == last_ms:
        return last
    made = time_of(ms)
    _last_time = (ms, made)
    return made
