"""Waiting for an orchestrator's tailers to catch up after its start."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chatlog.orchestrator._waits import PartitionTailer


async def until_caught_up(tailers: Sequence[PartitionTailer],
                          tasks: Sequence[asyncio.Task[None]]) -> None:
    """Return once every tailer has read up to the present; raise what ended one of
    ``tasks`` (a tailer or the timer) first."""
    waits = [asyncio.ensure_future(t.caught_up.wait()) for t in tailers]
    try:
        await asyncio.wait([*waits, *tasks], return_when="FIRST_COMPLETED")
        while not all(w.done() for w in waits):
            for task in tasks:
                if task.done():
                    task.result()  # a tailer or the timer died: surface why
            await asyncio.wait(
                [*[w for w in waits if not w.done()], *tasks],
                return_when="FIRST_COMPLETED",
            )
    finally:
        for w in waits:
            w.cancel()
