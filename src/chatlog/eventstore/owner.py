"""One owner per data dir: a lock file that names the process using it.

The owner (``chatlog serve``, or a CLI command that started a private Valkey
because no server runs) holds an exclusive ``flock`` on ``<data dir>/chatlog.lock``
for as long as it lives, and writes into it who it is: its pid, the command,
where its Valkey listens and (for ``serve``) its HTTP address. The kernel
drops the lock when the process dies, however it dies, so a lock left by a
killed run is never mistaken for a live owner (stale-lock safe by
construction). The file itself is never removed: removing a lock file races
with a process that has just opened it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from chatlog.eventstore.embedded import pid_alive, read_pidfile

#: The lock file's name inside the data dir.
LOCK_FILE = "chatlog.lock"


@dataclass(frozen=True)
class Owner:
    """Who owns a data dir, as its lock file says."""

    pid: int
    command: str
    started_at: float
    valkey_url: str | None = None
    valkey_pid: int | None = None
    address: str | None = None

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started_at)

    def describe(self) -> str:
        """``chatlog serve (pid 12, http://127.0.0.1:8080)``."""
        where = f", {self.address}" if self.address else ""
        return f"chatlog {self.command} (pid {self.pid}{where})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uptime_seconds": round(self.uptime, 1)}


def _parse(text: str) -> Owner | None:
    try:
        doc = json.loads(text)
        return Owner(
            pid=int(doc["pid"]), command=str(doc["command"]),
            started_at=float(doc["started_at"]), valkey_url=doc.get("valkey_url"),
            valkey_pid=doc.get("valkey_pid"), address=doc.get("address"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_owner(data_dir: Path, wait: float = 2.0) -> Owner | None:
    """The live owner of ``data_dir``, or None when nobody holds its lock.

    An owner that has just taken the lock may not have written its record
    yet; this waits up to ``wait`` seconds for it.
    """
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: somebody owns it
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            owner = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
            if owner is not None:
                return owner
            if time.monotonic() >= deadline:
                return Owner(pid=0, command="(starting)", started_at=time.time())
            time.sleep(0.02)
    finally:
        os.close(fd)


class DataDirLock:
    """The exclusive lock on one data dir, held by this process."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / LOCK_FILE
        self._fd: int | None = None
        self.owner: Owner | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, command: str) -> Owner | None:
        """Take the lock: None when taken, else the owner that holds it."""
        if self._fd is not None:
            raise RuntimeError("this lock is already held")
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                other = read_owner(self.dir)
                if other is not None:
                    return other
                continue  # released in between: try again
            self._fd = fd
            self.record(Owner(pid=os.getpid(), command=command, started_at=time.time()))
            return None
        raise RuntimeError(f"could not take the lock {self.path}")  # pragma: no cover

    def record(self, owner: Owner | None = None, **changes: Any) -> Owner:
        """Write (or update) this process's record in the lock file."""
        if self._fd is None:
            raise RuntimeError("the lock is not held")
        base = owner or self.owner
        if base is None:  # pragma: no cover - acquire() always records first
            raise RuntimeError("no owner record to update")
        self.owner = replace(base, **changes)
        data = json.dumps(asdict(self.owner)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        return self.owner

    def release(self) -> None:
        """Clear the record and drop the lock (the kernel does it too if we die)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _serves_dir(pid: int, directory: Path) -> bool:
    """True when ``pid`` is a server working in ``directory`` (Valkey chdirs to ``--dir``;
    its command line is rewritten to a process title, so the cwd is what identifies it)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == directory.resolve()
    except OSError:
        return False


def stop_orphan(valkey_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop a Valkey a killed owner left running on ``valkey_dir``; its pid, or None.

    Call it only while holding the data dir's lock: then no live chatlog owns
    that Valkey. The pid file alone is not trusted (pids are reused): the
    process must be a server working in ``valkey_dir``.
    """
    pid = read_pidfile(Path(valkey_dir) / "valkey.pid")
    if not pid or not pid_alive(pid):
        return None
    if not _serves_dir(pid, Path(valkey_dir)):
        return None
    os.kill(pid, signal.SIGTERM)  # it flushes its AOF and exits
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.02)
    return pid
