"""An entry's event id and time decoded the fast way equal what ``uuid.UUID`` and
``chatlog.events.position_time`` make; other text still fails as ``uuid.UUID`` fails."""

from __future__ import annotations

import uuid

import pytest

from chatlog import events
from chatlog.eventstore._decode_fast import event_uuid, position_time


def test_event_ids_decode_as_uuid_does() -> None:
    for value in (uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)):
        got = event_uuid(str(value).encode())
        assert got == value and str(got) == str(value) and hash(got) == hash(value)
        assert got.version == value.version and got.bytes == value.bytes
    # not the 36 characters str(UUID) writes: uuid.UUID decides, as before
    assert event_uuid(uuid.UUID(int=7).hex.encode()) == uuid.UUID(int=7)
    for bad in (b"not-an-id", b"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", b""):
        with pytest.raises(ValueError):
            event_uuid(bad)


def test_position_times_are_the_positions_milliseconds() -> None:
    for position in ("1700000000123-0", "1700000000123-5", "1700000000124-0", "0-1"):
        assert position_time(position) == events.position_time(position)


def test_an_id_with_a_dash_too_many_fails_as_uuid_does() -> None:
    """36 characters with the four dashes where str(UUID) puts them, and one more in
    place of a digit: uuid.UUID rejects it (31 digits); the fast path made a UUID."""
    for bad in (b"12345678-1234-1234-1234-12345678-abc", b"12345678-1234-1234-1234-1234567890a-"):
        with pytest.raises(ValueError):
            uuid.UUID(bad.decode())
        with pytest.raises(ValueError):
            event_uuid(bad)
