"""Observe a store's appends: acknowledgement latency and group-commit sizes (the metrics)."""

from __future__ import annotations

from chatlog.eventstore._append import AppendObserver
from chatlog.eventstore.store import EventStore

__all__ = ["AppendObserver", "observe_appends"]


def observe_appends(store: EventStore, observer: AppendObserver | None) -> None:
    """Tell ``observer`` about every acknowledged append and group commit of ``store``;
    None stops it. (The append path is the store's; this is its one outside hook.)"""
    store._appender.observer = observer
