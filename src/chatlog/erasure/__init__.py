"""Erasure: forget a project or a thread in every tier (log, AOF, archive, read models),
leaving a tombstone event without content; resumable after a crash."""

from chatlog.erasure.service import (
    FAULT_ENV,
    STEPS,
    Eraser,
    ErasureReport,
    eraser_for,
    erasure_fault_hook,
)

__all__ = ["FAULT_ENV", "STEPS", "Eraser", "ErasureReport", "eraser_for", "erasure_fault_hook"]
