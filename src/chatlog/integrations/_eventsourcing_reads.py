"""Notifications from the application's notification list and the log, in one pass.

A read of 100 notifications is a hot path (the library's processing and
catching-up readers call it in a loop): each element of the list
(``_eventsourcing_scripts.note``: position, topic, version, originator id) and
the state in its log entry's body make one ``Notification``, built without the
frozen dataclass's ``__init__`` when that is all it would do, and without
parsing the body's JSON (the state is the body's blob).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Notification

from chatlog.eventstore.codec import BLOB_MARK, split_body
from chatlog.integrations._archived import body_of

#: (notification id, position, topic, version, originator id): an element whose body
#: the log's span did not hold (read afterwards, or from the archive).
Missed = tuple[int, bytes, bytes, bytes, bytes]


def _plain(cls: type) -> bool:
    """Whether instances of the dataclass ``cls`` are just their fields: no slots,
    no ``__post_init__`` (then :func:`notification` may skip ``__init__``)."""
    return not hasattr(cls, "__slots__") and not hasattr(cls, "__post_init__")


_new = object.__new__
_set = object.__setattr__
FAST = _plain(Notification)
_MARK = BLOB_MARK[0]


def notification(
    nid: int, originator_id: uuid.UUID | str, version: int, topic: str, state: bytes
) -> Notification:
    """``Notification(...)``: without the frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) when that is all it does."""
    if not FAST:
        return Notification(id=nid, originator_id=originator_id,
                            originator_version=version, topic=topic, state=state)
    n: Notification = _new(Notification)
    _set(n, "__dict__", {"id": nid, "originator_id": originator_id,
                         "originator_version": version, "topic": topic, "state": state})
    return n


def body(fields: Any) -> bytes:
    """The body (field ``b``) of an entry's fields as the server sends them (the
    integrations write ``i t a v b``: it is the last), or redis-py's dict."""
    if isinstance(fields, dict):
        found: bytes = fields.get(b"b", b"")
        return found
    if len(fields) == 10 and fields[8] == b"b":
        last: bytes = fields[9]
        return last
    return body_of(fields)


def state_of(text: bytes) -> bytes:
    """The state of a stored event: its body's blob."""
    if text[:1] == BLOB_MARK:  # always, as the recorders write them
        return text[5 + int.from_bytes(text[1:5], "big"):]
    return split_body(text)[1] or b""


class Reader:
    """Builds one recorder's notifications; remembers the topics' and originator ids'
    text (a recorder's reads meet the same few again and again; bounded)."""

    def __init__(self, originator_id: Callable[[str], uuid.UUID | str]) -> None:
        self.convert = originator_id
        self.oids: dict[bytes, uuid.UUID | str] = {}
        self.topics: dict[bytes, str] = {}

    def pick(self, members: list[bytes], nid: int, want: set[bytes], limit: int,
             span: dict[bytes, Any], out: list[Notification | None],
             missed: list[tuple[int, Missed]],
             ) -> tuple[int, tuple[int, bytes] | None, tuple[int, bytes] | None]:
        """Append to ``out`` the notifications of ``members`` (the list's elements from
        notification ``nid + 1`` on) of the topics ``want`` (empty: all), up to
        ``limit``, their states from ``span`` (position -> the log entry's fields);
        one whose entry ``span`` lacks is a None in ``out`` and (its index in ``out``,
        its parts) in ``missed``. How many members it went through, and the
        (notification id, position) of the first and the last it took (None: none)."""
        oids, topics, convert = self.oids, self.topics, self.convert
        if len(oids) > 4096:
            oids.clear()
        if len(topics) > 1024:
            topics.clear()
        fast, mark, from_bytes, get = FAST, _MARK, int.from_bytes, span.get
        taken, seen, first, last_nid, last_pos = 0, 0, None, 0, b""
        for member in members:
            seen += 1
            nid += 1
            parts = member.split(b"\0", 3)
            if len(parts) != 4:  # (b"": a placeholder, no notification)
                continue
            position, topic, version, raw = parts
            if want and topic not in want:
                continue
            fields = get(position)
            if fields is None:
                missed.append((len(out), (nid, position, topic, version, raw)))
                out.append(None)
            else:
                if len(fields) == 10 and fields[8] == b"b":
                    text = fields[9]
                    state = (text[5 + from_bytes(text[1:5], "big"):]
                             if text and text[0] == mark else state_of(text))
                else:
                    state = state_of(body(fields))
                name = topics.get(topic)
                if name is None:
                    name = topics[topic] = topic.decode()
                oid = oids.get(raw)
                if oid is None:
                    oid = oids[raw] = convert(raw.decode())
                if fast:
                    n: Notification = _new(Notification)
                    _set(n, "__dict__", {"id": nid, "originator_id": oid,
                                         "originator_version": int(version), "topic": name,
                                         "state": state})
                    out.append(n)
                else:
                    out.append(notification(nid, oid, int(version), name, state))
            if first is None:
                first = (nid, position)
            last_nid, last_pos = nid, position
            taken += 1
            if taken >= limit:
                break
        return seen, first, (last_nid, last_pos) if first is not None else None

    def fill(self, out: list[Notification | None], missed: list[tuple[int, Missed]],
             bodies: list[bytes | None]) -> list[Notification]:
        """``out`` with the notifications of ``missed`` whose ``bodies`` were found put
        in, and those of the others (in neither tier) left out."""
        for (i, (nid, _, topic, version, raw)), found in zip(missed, bodies, strict=True):
            if found is None:
                continue
            oid = self.oids.get(raw)
            if oid is None:
                oid = self.oids[raw] = self.convert(raw.decode())
            out[i] = notification(nid, oid, int(version), topic.decode(), state_of(found))
        return [n for n in out if n is not None]
