"""Run ``chatlog serve`` as a real process on loopback (for black-box tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CHATLOG = [str(Path(sys.executable).parent / "chatlog")]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
    env.update(extra)
    return env


class Served:
    """One ``chatlog serve --port 0``; ``url`` is where it listens."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        # stderr goes to a file, so a chatty server never blocks on a full pipe.
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*CHATLOG, "--data-dir", str(data_dir), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._err, env=clean_env(**env), text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not start: {line!r} {self._read_err()!r}")
        self.banner = line
        self.stderr = ""
        self.url = line.split("listening on ", 1)[1].split(" ", 1)[0]

    def stop(self) -> int:
        """SIGTERM, as a service manager would; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.stderr = self._read_err()
        return self.proc.returncode

    def _read_err(self) -> str:
        if self._err.closed:
            return self.stderr
        self._err.seek(0)
        text = self._err.read().decode(errors="replace")
        self._err.close()
        return text


