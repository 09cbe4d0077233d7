"""Starting the orchestrator settles the heap (issue 18): its thousands of waits must not
make every garbage collection walk the start-up objects, nor collect every 700
allocations during a burst of wake-ups."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatlog import tuning


@pytest.fixture
def default_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CPython's thresholds and an unsettled process for the test; the state restored after."""
    before = gc.get_threshold()
    monkeypatch.setattr(tuning, "_settled", False)
    gc.set_threshold(*tuning.DEFAULT_THRESHOLD)
    # The full collection the start does here would otherwise free what earlier tests
    # left behind (an unclosed socket's ResourceWarning), and fail this test for it.
    gc.unfreeze()
    monkeypatch.setattr(sys, "unraisablehook", lambda _: None)
    gc.collect()
    monkeypatch.undo()
    monkeypatch.setattr(tuning, "_settled", False)
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def test_start_freezes_the_heap_and_collects_less_often(
    default_gc: None, orchestrator_factory: Callable[..., Any]
) -> None:
    assert gc.get_freeze_count() == 0
    await orchestrator_factory()
    assert gc.get_freeze_count() > 0  # the start-up objects: never walked again
    assert gc.get_threshold() == tuning.SETTLED_THRESHOLD


async def test_thresholds_an_application_chose_are_kept(
    default_gc: None, orchestrator_factory: Callable[..., Any]
) -> None:
    gc.set_threshold(5000, 10, 10)
    await orchestrator_factory()
    assert gc.get_threshold() == (5000, 10, 10)


def test_once_per_process_unless_serving(default_gc: None) -> None:
    assert tuning.settle_heap()
    assert not tuning.settle_heap()  # a second orchestrator does not collect again
    assert tuning.settle_heap(threshold=tuning.GC_THRESHOLD)  # serve: its own thresholds
    assert gc.get_threshold() == tuning.GC_THRESHOLD
