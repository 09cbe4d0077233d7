"""The ``chatlog`` command: a thin layer over the library.

Every command takes its settings from flags and ``CHATLOG_*`` variables, and
turns chatlog's errors into one readable line (exit code 1), never a traceback.
"""

from __future__ import annotations

from chatlog.cli import archive as _archive  # noqa: F401  (archive)
from chatlog.cli import erase as _erase  # noqa: F401  (erase)
from chatlog.cli import jobs as _jobs  # noqa: F401  (jobs enqueue, list, show)
from chatlog.cli import log as _log  # noqa: F401  (registers append, tail, status, trim)
from chatlog.cli import migrate as _migrate  # noqa: F401  (migrate)
from chatlog.cli import readmodel as _readmodel  # noqa: F401  (rebuild, import)
from chatlog.cli import serve as _serve  # noqa: F401  (serve)
from chatlog.cli import worker as _worker  # noqa: F401  (worker, dead-letters)
from chatlog.cli._app import cli, main

__all__ = ["cli", "main"]
