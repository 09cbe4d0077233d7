"""Remembered event ids: compact records in time-generation hash buckets.

An appended event's id is remembered for a window (the idempotency window for
an id its client chose, the outcome window for one the server made), so that
the same id again is a duplicate (same content) or refused (other content).
Each id is one field of a hash bucket of its partition,

    ``<tag>:ids:<window ms>:<generation>:<bucket>``

where the generation is the server's clock divided by the window and the
bucket is a 16-bit hash of the id modulo :data:`BUCKETS`. The field is the
id's identity: its 16 bytes and its project's number in the partition
(``<tag>:idp``, project -> number, assigned at the project's first record and
never reused), exact: two distinct ids never share a field, so no other event
is ever reported as a duplicate. The value is ``"<position> <version>
<digest>"`` with an 8-byte digest of the content and the position's
milliseconds as an offset from the generation's start. A bucket expires a window
after its generation ends, so a record lives at least the window and at most
twice it, and a lookup reads two generations. Buckets of up to
``hash-max-listpack-entries`` fields (128 by default: about 1M ids per
partition and generation) stay listpack-encoded: about 50 bytes a record
instead of the ~180 of a key per id.

The append script (``append.lua``) reads and writes the records; a log from
before this layout kept one key per id (:meth:`Keys.event_id`): those are
read too for a window after the upgrade (:func:`legacy_ids_until`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
import zlib
from importlib import resources
from typing import TYPE_CHECKING, Protocol

from chatlog.eventstore.connection import guard

if TYPE_CHECKING:
    from chatlog.eventstore.connection import Client
    from chatlog.eventstore.keys import Keys


class _Log(Protocol):
    redis: Client
    keys: Keys
    idempotency_window_ms: int

#: Buckets per partition, window and generation. Part of the key layout: a log's
#: records are found only with the count they were written with.
BUCKETS = 16384

#: The log's metadata field: until when (epoch ms) the keys per id of the layout
#: before buckets may still hold a remembered id (0: the log never had them).
LEGACY_FIELD = "ids_legacy_until"

_CLIENT, _SERVER, _RETRY = b"i", b"o", b"r"
#: A record's length: kind, 2-byte bucket hash, 8-byte digest, 16-byte id, 10-byte filter
#: hash. The append script reads what follows it as the record's value found in the
#: archive (:func:`archived`).
RECORD_BYTES = 37


def spec(idempotency_window_ms: int, outcome_window_ms: int, legacy: bool) -> str:
    """The append script's per-call description of the records (its ``ids`` function)."""
    return (f"{max(idempotency_window_ms, 1)} {max(outcome_window_ms, 1)} {BUCKETS} "
            f"{1 if legacy else 0}")


def record(project: uuid.UUID | str, event_id: uuid.UUID | str, digest: str,
           supplied: bool, retry: bool = False) -> bytes:
    """How the script finds and keeps one event's record: its kind (``i``: a client's id,
    remembered for the idempotency window; ``o``: the server's, for the outcome window,
    on its first try, which cannot be a duplicate and looks nothing up; ``r``: the
    server's, sent again), a 2-byte hash of its identity choosing its bucket, an 8-byte
    digest of its content, the event id's 16 bytes (the script adds the project's
    number) and a 10-byte hash of the identity probing the archived ids' filter
    (:mod:`.archived_ids`)."""
    kind = _CLIENT if supplied else _RETRY if retry else _SERVER
    return record_of(_bytes(project), _bytes(event_id), digest8(digest), kind)


def record_of(project: bytes, event_id: bytes, digest: bytes, kind: bytes = _CLIENT) -> bytes:
    """:func:`record` from the 16 bytes of the project and of the event id and the 8 of
    the digest."""
    identity = project + event_id
    return (kind + (zlib.crc32(identity) & 0xFFFF).to_bytes(2) + digest + event_id
            + hashlib.blake2b(identity, digest_size=10).digest())


def as_retry(rec: bytes) -> bytes:
    """``rec`` sent again: a server-made id's first try (``o``) becomes a retry (``r``),
    which looks its id up."""
    return _RETRY + rec[1:] if rec[:1] == _SERVER else rec


def checked(rec: bytes) -> bytes:
    """``rec`` once the archive said its id is not there: the script does not probe the
    archived ids' filter for it again (its kind in upper case)."""
    return rec[:1].upper() + rec[1:RECORD_BYTES]


def archived(rec: bytes, position: str, version: int, digest: bytes) -> bytes:
    """``rec`` with the record the archive keeps of its id: the script takes it as found."""
    return rec[:RECORD_BYTES] + f"{position} {version} ".encode() + digest


def _bytes(value: uuid.UUID | str) -> bytes:
    """A UUID's 16 bytes (also of one given as text, or of another UUID class)."""
    raw = getattr(value, "bytes", None)
    return raw if isinstance(raw, bytes) else uuid.UUID(str(value)).bytes


def digest8(digest: str) -> bytes:
    """8 bytes of a content digest (the first 8 of a hex one, as the legacy layout's
    24 hex digits begin)."""
    try:
        raw = bytes.fromhex(digest[:16])
    except ValueError:
        raw = b""
    if len(raw) == 8:
        return raw
    return hashlib.blake2b(digest.encode(), digest_size=8).digest()


async def legacy_ids_until(store: _Log) -> int:
    """Until when (epoch ms) appends must also read the keys per id of the layout before
    buckets: an idempotency window after the first start with buckets, on a log that
    existed before (run before the log's metadata is first written)."""
    meta = store.keys.meta
    new_log = not await guard(store.redis.hexists(meta, "partitions"))
    until = 0 if new_log else int(time.time() * 1000) + store.idempotency_window_ms
    await guard(store.redis.hsetnx(meta, LEGACY_FIELD, str(until)))
    return int(await guard(store.redis.hget(meta, LEGACY_FIELD)) or 0)


def library() -> str:
    """The append script's functions (``append.lua``), to prepend to a script using them."""
    return resources.files("chatlog.eventstore").joinpath("append.lua").read_text()
