"""Erasure: forget a project or a thread in every tier (log, AOF, archive, read models),
leaving a tombstone event without content; resumable after a crash."""

from chatlog.erasure.service import STEPS, Eraser, ErasureReport

__all__ = ["STEPS", "Eraser", "ErasureReport"]
