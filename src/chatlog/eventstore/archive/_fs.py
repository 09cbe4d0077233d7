"""Where the archive's files live: a local directory (durable renames and fsyncs),
or any fsspec URL (``s3://``, ``gs://``...; ``pip install chatlog[s3]``).

The archive needs little of a file system: write a file durably, rename it into
place, replace a small file atomically, list a directory, remove files.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from chatlog.errors import ArchiveError, ConfigError, cannot_use_dir


class Storage:
    """A local directory. Every change is durable when the call returns."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.url = root

    def join(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def makedirs(self, path: str) -> None:
        created = not os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        if created:
            _fsync_dir(os.path.dirname(path))

    def listdir(self, path: str) -> list[str]:
        """Names in ``path`` (empty when it does not exist)."""
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    @contextlib.contextmanager
    def create(self, path: str) -> Iterator[IO[bytes]]:
        """A new file, flushed and fsynced when the block ends."""
        with open(path, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def open(self, path: str) -> Any:
        """``path`` for pyarrow to open itself (memory-mapped), or a file object."""
        return path

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def rename(self, src: str, dst: str) -> None:
        """Atomically move ``src`` to ``dst`` (replacing it) and make that durable."""
        os.replace(src, dst)
        _fsync_dir(os.path.dirname(dst))

    def replace_bytes(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably (temp, fsync, rename,
        fsync of the directory)."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.create(tmp) as f:
            f.write(data)
        self.rename(tmp, path)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)

    def sync_dir(self, path: str) -> None:
        _fsync_dir(path)


class FsspecStorage(Storage):
    """An fsspec file system (object stores: a put is atomic, a close is durable).

    Not tested against a real object store in this repository's tests.
    """

    def __init__(self, url: str) -> None:
        try:
            import fsspec  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"archive URL {url!r} needs fsspec: pip install 'chatlog[s3]'"
            ) from exc
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.url = url

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1]
                          for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    @contextlib.contextmanager
    def create(self, path: str) -> Iterator[IO[bytes]]:
        with self.fs.open(path, "wb") as f:
            yield f

    def open(self, path: str) -> Any:
        return self.fs.open(path, "rb")

    def read_bytes(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def rename(self, src: str, dst: str) -> None:
        self.fs.mv(src, dst)

    def replace_bytes(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def sync_dir(self, path: str) -> None:
        return None


def storage_for(url: str) -> Storage:
    """The storage for a local path, a ``file://`` URL or an fsspec URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = parsed.path if parsed.scheme == "file" else url
        root = str(Path(path).expanduser().absolute())
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(cannot_use_dir(root, "the archive", exc)) from None
        return Storage(root)
    return FsspecStorage(url)


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
