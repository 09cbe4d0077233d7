"""The archive side of an erasure, run in a child process at the lowest CPU priority.

Rewriting segments (read, filter, compress, verify) is seconds of CPU. In the
process that answers appends (``serve``) it would compete for the CPU and, worse,
for the interpreter lock with the event loop; a child process at nice 19 takes
only the CPU nobody else wants, and shares no lock. The parent holds the
archiver's lease meanwhile and passes its fencing token; the child dies with its
parent (so a killed ``serve`` leaves no writer behind: the erasure resumes in the
next one) and prints what it erased as JSON.

Run as ``python -m chatlog.erasure._archive_job SPEC PARENT_PID`` by
:func:`erase_in_child` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from dataclasses import asdict
from typing import Any

from chatlog.erasure._background import NICENESS
from chatlog.errors import ArchiveConflict, ArchiveError

#: The child's exit status when the archive refused the rewrite (a newer lease, or
#: a manifest changed meanwhile): the parent raises :class:`ArchiveConflict`.
CONFLICT_EXIT = 3
_PR_SET_PDEATHSIG = 1


async def erase_in_child(url: str, partition: int, project: str, aggregate: str | None,
                         before: str, prefix: str | None, fence: int) -> dict[str, int]:
    """Erase the scope's rows from ``partition`` of the archive at ``url`` in a child
    process; what it erased (the fields of :class:`ArchiveErasure`)."""
    spec = json.dumps({"url": url, "partition": partition, "project": project,
                       "aggregate": aggregate, "before": before, "prefix": prefix,
                       "fence": fence})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatlog.erasure._archive_job", spec, str(os.getpid()),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    except BaseException:  # cancelled: no rewrite goes on without the lease
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    message = err.decode(errors="replace").strip().splitlines()
    tail = message[-1] if message else f"exit status {proc.returncode}"
    if proc.returncode == CONFLICT_EXIT:
        raise ArchiveConflict(tail)
    if proc.returncode != 0:
        raise ArchiveError(f"the erasure's rewrite of archive partition {partition} failed: "
                           f"{tail}")
    done: dict[str, int] = json.loads(out)
    return done


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[2]))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    spec: dict[str, Any] = json.loads(argv[1])
    from chatlog.eventstore.archive import Archive, erase_rows

    archive = Archive.open(spec.pop("url"))
    try:
        done = erase_rows(archive, **spec)
    except ArchiveConflict as exc:
        print(exc, file=sys.stderr)
        return CONFLICT_EXIT
    print(json.dumps(asdict(done)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
