"""Fixtures for the orchestrator: settings with tiny timeouts, orchestrators that stop at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey, normalize_project_id
from chatlog.orchestrator import Orchestrator
from chatlog.settings import Settings


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        data_dir=tmp_path,
        start_timeout=0.5,
        approval_timeout=0.5,
        job_lease=0.5,
        job_max_deliveries=3,
    )


@pytest.fixture
def project() -> ProjectKey:
    return normalize_project_id("Blog-Project")


@pytest.fixture
async def orchestrator_factory(
    store: EventStore, settings: Settings
) -> AsyncIterator[Callable[..., Any]]:
    """Make orchestrators (started unless ``start=False``); all stopped after the test."""
    made: list[Orchestrator] = []

    async def make(
        *, start: bool = True, store_: EventStore | None = None, **overrides: Any
    ) -> Orchestrator:
        s = settings.model_copy(update=overrides) if overrides else settings
        o = Orchestrator(store_ or store, s)
        made.append(o)
        if start:
            await o.start()
        return o

    yield make
    for o in made:
        await o.stop()


@pytest.fixture
async def orchestrator(orchestrator_factory: Callable[..., Any]) -> Orchestrator:
    return await orchestrator_factory()  # type: ignore[no-any-return]
