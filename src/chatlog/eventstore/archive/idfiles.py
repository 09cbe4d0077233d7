"""The archived ids of a segment (``ids/partition=<N>/<last position>.ids`` under the
archive's root): what the log remembered of each of its events' ids when the
archiver took them out of Redis (:mod:`chatlog.eventstore.archived_ids`).

A file is a 16-byte header, fixed-width entries sorted by identity (so one is found
by binary search, with no index) and a 16-byte BLAKE2b of the entries::

    project 16 B | event id 16 B | position ms 8 | seq 8 | version 8 | digest 8
    | window ms 8 | generation 8                      (big-endian, 80 B an entry)

``digest`` is the record's 8-byte content digest (zeros: the record had none);
``window`` and ``generation`` name the bucket the record was in: it is remembered
until ``(generation + 2) * window`` (epoch ms), as it would have been in Redis.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chatlog.errors import ArchiveCorrupt

MAGIC = b"chatlog-ids-v1\n\0"
ENTRY = struct.Struct(">16s16sQQQ8sQQ")
_KEY = 32
_NO_DIGEST = bytes(8)


@dataclass(frozen=True, slots=True)
class ArchivedId:
    """What the archive keeps of one remembered event id."""

    project: bytes
    event_id: bytes
    position: str
    version: int
    #: 8 bytes, or b"" when the record had no digest (it then matches any content).
    digest: bytes
    window_ms: int
    generation: int

    @property
    def expires_ms(self) -> int:
        """Until when (epoch ms) the id is remembered, as its bucket would have been."""
        return (self.generation + 2) * self.window_ms


def ids_dir(storage: Any, partition: int) -> str:
    return str(storage.join("ids", f"partition={partition}"))


def ids_path(storage: Any, partition: int, last: str) -> str:
    """The file of the segment ending at ``last`` (a rewritten segment keeps its last
    position, so its file too)."""
    return str(storage.join("ids", f"partition={partition}", f"{last}.ids"))


def encode_packed(entries: Sequence[bytes]) -> bytes:
    """A file of entries packed already (:data:`ENTRY`)."""
    body = b"".join(sorted(entries))
    return MAGIC + body + hashlib.blake2b(body, digest_size=16).digest()


def encode_sorted(body: bytes) -> bytes:
    """A file of ``body``: entries packed and sorted already (:data:`ENTRY`)."""
    if len(body) % ENTRY.size:
        raise ValueError(f"{len(body)} bytes are not whole entries of {ENTRY.size}")
    return MAGIC + body + hashlib.blake2b(body, digest_size=16).digest()


def check(path: str, data: bytes) -> memoryview:
    """The entries of a file's ``data``; :class:`ArchiveCorrupt` when it is not whole."""
    body = memoryview(data)[len(MAGIC):-16]
    if (not data.startswith(MAGIC) or len(body) % ENTRY.size
            or hashlib.blake2b(body, digest_size=16).digest() != data[-16:]):
        raise ArchiveCorrupt(f"archived ids {path} are damaged (bad header, size or checksum)")
    return body


def entry_at(body: memoryview, i: int) -> ArchivedId:
    project, event_id, ms, seq, version, digest, window, generation = ENTRY.unpack_from(
        body, i * ENTRY.size)
    return ArchivedId(project, event_id, f"{ms}-{seq}", version,
                      b"" if digest == _NO_DIGEST else digest, window, generation)


def entries(body: memoryview) -> Iterator[ArchivedId]:
    for i in range(len(body) // ENTRY.size):
        yield entry_at(body, i)


def find(body: memoryview, project: bytes, event_id: bytes) -> ArchivedId | None:
    """The entry of ``(project, event id)`` (16 bytes each), by binary search."""
    key = project + event_id
    lo, hi = 0, len(body) // ENTRY.size
    while lo < hi:
        mid = (lo + hi) // 2
        at = mid * ENTRY.size
        probe = bytes(body[at:at + _KEY])
        if probe < key:
            lo = mid + 1
        elif probe > key:
            hi = mid
        else:
            return entry_at(body, mid)
    return None


def publish(storage: Any, partition: int, last: str, data: bytes) -> str:
    """Write a segment's file under a temporary name, fsync it, read it back and check it,
    then rename it into place (durably); its path."""
    directory = ids_dir(storage, partition)
    storage.makedirs(directory)
    path = ids_path(storage, partition, last)
    tmp = storage.join("ids", f"partition={partition}", f".{last}.{uuid.uuid4().hex[:8]}.tmp")
    with storage.create(tmp) as f:
        f.write(data)
    back = storage.read_bytes(tmp)
    if back != data:
        storage.remove(tmp)
        raise ArchiveCorrupt(f"archived ids {tmp} read back other bytes; it was removed")
    if storage.exists(path):  # published meanwhile (an archiver whose lease had lapsed):
        storage.remove(tmp)   # the first one stays, written before any record left Redis
        return path
    storage.rename(tmp, path)
    return path


def remove_orphans(storage: Any, partition: int, lasts: set[str]) -> int:
    """Remove the partition's temporary files and the files of segments no longer in the
    archive (``lasts``: the last positions of those it holds); how many."""
    removed = 0
    for name in storage.listdir(ids_dir(storage, partition)):
        if name.startswith(".") or (name.endswith(".ids") and name[:-4] not in lasts):
            storage.remove(storage.join("ids", f"partition={partition}", name))
            removed += 1
    return removed


class Cache:
    """Recently opened files' entries (files never change once published, so a cached one
    is never stale): a local file memory-mapped (a lookup reads the pages its binary
    search touches), up to ``files`` of them; a file of an object store read whole,
    up to ``limit`` bytes of them."""

    def __init__(self, limit: int = 64 * 1024 * 1024, files: int = 256) -> None:
        self.limit = limit
        self.max_files = files
        self._files: OrderedDict[str, tuple[memoryview, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def body(self, storage: Any, path: str) -> memoryview | None:
        """The entries of ``path`` (None: no such file)."""
        with self._lock:
            got = self._files.get(path)
            if got is not None:
                self._files.move_to_end(path)
                return got[0]
        if not storage.exists(path):
            return None
        if getattr(storage, "fs", None) is None:  # a local file: mapped, checked at publish
            with open(path, "rb") as f:
                data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            if bytes(data[: len(MAGIC)]) != MAGIC or (len(data) - len(MAGIC) - 16) % ENTRY.size:
                raise ArchiveCorrupt(f"archived ids {path} are damaged (bad header or size)")
            body, held = data[len(MAGIC) : -16], 0
        else:
            body = check(path, storage.read_bytes(path))
            held = len(body)
        with self._lock:
            self._files[path] = (body, held)
            self._bytes += held
            while len(self._files) > 1 and (self._bytes > self.limit
                                            or len(self._files) > self.max_files):
                _, (_, old) = self._files.popitem(last=False)
                self._bytes -= old
        return body
