"""ChatlogSaver passes langgraph-checkpoint-conformance: all 81 tests, the optional ones too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate

from chatlog.eventstore import EventStore
from chatlog.integrations.langgraph import ChatlogSaver

pytestmark = pytest.mark.also_on_cluster


async def test_the_conformance_suite_passes_entirely(store_factory) -> None:
    @checkpointer_test(name="ChatlogSaver")
    async def factory() -> AsyncIterator[ChatlogSaver]:
        store: EventStore = await store_factory(prefix=f"lg{uuid.uuid4().hex[:10]}")
        yield ChatlogSaver(store, project="Agents")

    report = await validate(factory)
    failures = [
        (cap, name) for cap, result in report.results.items()
        for name in getattr(result, "failures", [])
    ]
    assert report.passed_all_base() and report.passed_all(), (report, failures)
    counted = sum(r.tests_passed for r in report.results.values())
    assert counted == 81, report
