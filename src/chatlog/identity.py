"""Identity rules: project keys and thread ids (seed tasks 1.4 and 1.5).

``"Blog-Project"``, ``" blog-project "`` and ``"BLOG-PROJECT"`` are one project;
``None``, blanks and ``"system-master"`` are the system scope; a UUID is taken
as it is. Thread ids that arrive as ``null`` in any spelling mean "new thread".
"""

from __future__ import annotations

import os
import threading
import unicodedata
import uuid
from dataclasses import dataclass

from chatlog.errors import InvalidInput, InvalidProjectId

#: Default namespace for project UUIDs; a deployment can set its own to match
#: the UUIDs it already has (``CHATLOG_PROJECT_NAMESPACE``).
DEFAULT_PROJECT_NAMESPACE = uuid.UUID("6f1c1a8e-3b5d-5c2e-9a57-63686174c06f")
#: The system scope is stored under the nil UUID.
SYSTEM_PROJECT = uuid.UUID(int=0)
SYSTEM_NAMES = frozenset({"system-master"})
#: The name shown for the system scope: one of SYSTEM_NAMES, so that
#: normalising a shown name gives the same key again.
SYSTEM_DISPLAY = "system-master"
MAX_NAME_LENGTH = 256
NULL_THREAD_SPELLINGS = frozenset({"", "null", "none", "undefined"})
THREAD_PREFIX = "thread-"
MAX_THREAD_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ProjectKey:
    """A normalised project: the key everything is stored under, and the name to show."""

    key: uuid.UUID
    display: str

    @property
    def is_system(self) -> bool:
        return self.key == SYSTEM_PROJECT

    def __str__(self) -> str:
        return str(self.key)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in text)


def canonical_name(raw: str) -> str:
    """The case- and compatibility-insensitive form of a project name."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", raw).casefold()).strip()


def normalize_project_id(
    raw: str | uuid.UUID | None, namespace: uuid.UUID = DEFAULT_PROJECT_NAMESPACE
) -> ProjectKey:
    """Map a raw project name (or UUID) to its project key.

    Raises :class:`InvalidProjectId` for names over 256 characters or with
    control characters.
    """
    if isinstance(raw, uuid.UUID):
        return ProjectKey(raw, str(raw))
    if raw is None:
        return ProjectKey(SYSTEM_PROJECT, SYSTEM_DISPLAY)
    if not isinstance(raw, str):
        raise InvalidProjectId(f"project id must be a string, not {type(raw).__name__}")
    if len(raw) > MAX_NAME_LENGTH:
        raise InvalidProjectId(
            f"project name is {len(raw)} characters long; at most {MAX_NAME_LENGTH} are allowed"
        )
    if _has_control(raw):
        raise InvalidProjectId(
            f"project name {raw!r} contains control characters; use printable text"
        )
    key = canonical_name(raw)
    if not key or key in SYSTEM_NAMES:
        return ProjectKey(SYSTEM_PROJECT, SYSTEM_DISPLAY)
    try:
        parsed = uuid.UUID(key)
    except ValueError:
        return ProjectKey(uuid.uuid5(namespace, key), raw.strip())
    return ProjectKey(parsed, str(parsed))


def is_new_thread(raw: str | None) -> bool:
    """True when a thread id means "start a new thread" (null in any spelling)."""
    return raw is None or raw.strip().lower() in NULL_THREAD_SPELLINGS


#: Random bytes fetched per getrandom call (a call per id showed in profiles of appends).
_RANDOM_BATCH = 4096
_VERSION_4 = (~(0xC000 << 48) & ~(0xF000 << 64)) & ((1 << 128) - 1)


class _RandomPool:
    """``os.urandom`` bytes handed out 16 at a time; emptied in a forked child so
    two processes never hand out the same bytes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = b""
        self.at = 0

    def take16(self) -> bytes:
        with self.lock:
            if self.at + 16 > len(self.data):
                self.data, self.at = os.urandom(_RANDOM_BATCH), 0
            at = self.at
            self.at = at + 16
            return self.data[at:at + 16]

    def clear(self) -> None:
        self.lock = threading.Lock()
        self.data, self.at = b"", 0


_POOL = _RandomPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.clear)


_VARIANT_AND_VERSION = (0x8000 << 48) | (4 << 76)
_new_uuid = uuid.UUID.__new__
_set_slot = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID, as ``uuid.uuid4()`` but without a getrandom call per id
    (and without ``UUID.__init__``'s checks of an int made valid here)."""
    u = _new_uuid(uuid.UUID)
    _set_slot(u, "int", int.from_bytes(_POOL.take16(), "big") & _VERSION_4 | _VARIANT_AND_VERSION)
    _set_slot(u, "is_safe", _UNKNOWN_SAFETY)
    return u


def new_thread_id() -> str:
    """``thread-`` and a random (version 4) UUID's text, formatted from its bytes (no
    UUID object and its ``str``: half the time, on every message to a new thread)."""
    raw = bytearray(_POOL.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{THREAD_PREFIX}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def normalize_thread_id(raw: str | None) -> tuple[str, bool]:
    """Return ``(thread_id, created)``: a new ``thread-<uuid4>`` for null spellings."""
    if raw is not None and not isinstance(raw, str):
        raise InvalidInput(f"thread_id must be a string or null, not {type(raw).__name__}")
    if is_new_thread(raw):
        return new_thread_id(), True
    assert raw is not None
    thread_id = raw.strip()
    if len(thread_id) > MAX_THREAD_ID_LENGTH:
        raise InvalidInput(
            f"thread_id is {len(thread_id)} characters long; at most "
            f"{MAX_THREAD_ID_LENGTH} are allowed"
        )
    if _has_control(thread_id):
        raise InvalidInput(f"thread_id {thread_id!r} contains control characters")
    return thread_id, False
