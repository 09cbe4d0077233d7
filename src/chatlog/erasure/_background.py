"""Erasure's heavy work yields the CPU to appends.

The append-only file rewrite of a server chatlog owns (the embedded Valkey)
runs in a child process the server forks: :func:`lower_children` gives it the
lowest CPU priority (nice 19), so the server's own thread, which answers the
appends, keeps the CPU and the rewrite takes what is left. (The archive rewrite
runs in a child process of chatlog's own at that priority: ``_archive_job``.)
"""

from __future__ import annotations

import os
from pathlib import Path

#: The niceness of the erasure's background processes (19: the lowest priority).
NICENESS = 19

def lower_children(pid: int) -> list[int]:
    """Lower the CPU priority of the child processes of ``pid`` (Linux ``/proc``);
    return the ones lowered (none where ``/proc`` does not list children)."""
    lowered = []
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    for child in listed:
        try:
            os.setpriority(os.PRIO_PROCESS, int(child), NICENESS)
        except (OSError, ValueError):
            continue
        lowered.append(int(child))
    return lowered
