"""The projection contract: declared event types, a checked bulk protocol, one meaning per fold.

A bulk projection folds events twice over: ``apply`` (live) and ``bulk_fold``
(rebuild, undecoded entries). Whatever the event type, both must give the
same tables.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from chatlog.events import NewEvent, data_model, known_types
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections.base import BulkProjection, Projection
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from tests.projections._util import dump


def test_every_default_projection_declares_its_event_types() -> None:
    known = set(known_types())
    for proj in default_projections():
        assert isinstance(proj, Projection)
        assert proj.event_types and proj.event_types <= known, proj.name
    assert any(isinstance(p, BulkProjection) for p in default_projections())


def _one_of_each_type() -> list[NewEvent]:
    key = normalize_project_id("Contract")
    events = []
    for i, type_ in enumerate([*known_types(), "message.unknown_to_this_version"]):
        model = data_model(type_)
        aggregate_type = model.aggregate_type if model is not None else "thread"
        data = ({"thread_id": "t-1", "role": "user", "content": f"m{i}"}
                if type_ == "message.appended" else {"reason": f"r{i}"})
        for aggregate in (aggregate_type, "workflow" if aggregate_type == "thread" else "thread"):
            events.append(NewEvent(
                id=uuid.uuid4(), type=type_, project=key.key, project_name=key.display,
                aggregate_type=aggregate, aggregate_id=f"{aggregate}-{i}", data=data))
    return events


async def test_the_live_fold_and_the_bulk_fold_agree_for_every_event_type(
    store: EventStore, tmp_path: Path
) -> None:
    for event in _one_of_each_type():
        await store.append([event])
    for proj in default_projections():
        if not isinstance(proj, BulkProjection):
            continue
        live = tmp_path / f"{proj.name}-live.sqlite"
        async with Projector(store, live, [proj]) as projector:
            assert await projector.catch_up() > 0
        built = tmp_path / f"{proj.name}-built.sqlite"
        await build(store, built, [proj])
        assert dump(built) == dump(live), proj.name
