"""Writing a bulk-loaded file back to disk while it is still being loaded.

A rebuild's file is written without journal or fsync and made durable once,
just before it is switched in. Left to the kernel, its pages (hundreds of MB for
a million messages) stay dirty until then, and that final fsync writes them all
while everything waits; an ``fdatasync`` on a thread of its own after each of
the load's commits writes them while the load goes on (it needs no GIL), so the
last one has little left to write.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class BackgroundFlush:
    """``fdatasync`` of one file on a thread, at most one at a time."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """Start writing the file's dirty pages back, unless a flush is still running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._flush, name="rebuild-flush", daemon=True)
        self._thread.start()

    def _flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError:  # only an early start of what the switch's fsync does anyway
            pass

    def close(self) -> None:
        """Wait for a running flush; release the file."""
        if self._thread is not None:
            self._thread.join()
        os.close(self._fd)
