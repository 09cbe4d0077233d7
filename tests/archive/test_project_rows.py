"""A small project's archived events cost the read of the row groups that hold them,
but only its own rows become Python objects (issue 15 #3: a 0.05% project's replay
decoded 16,384 rows per hit); its reads forwards and backwards stay exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from chatlog.eventstore import START, EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archive import _segments as seg
from chatlog.eventstore.archive._projects import read_project, read_project_before
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.identity import normalize_project_id
from tests.helpers import message


async def test_a_rare_projects_archived_rows_are_the_only_ones_decoded(
    store_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: EventStore = await store_factory()
    rare: list[str] = []
    for i in range(400):
        await store.append_one(message("Big", f"b{i % 5}", f"big {i}"))
        if i % 100 == 0:
            event = message("Rare", "r", f"rare {i}")
            await store.append_one(event)
            rare.append(str(event.id))
    archive = Archive.open(str(tmp_path / "archive"))
    archiver = Archiver(store, archive, HotWindow(events=10, seconds=0, bytes=0),
                        segment_events=150)
    [result] = await archiver.run_pass()
    assert result.archived >= 390
    decoded: list[int] = []
    real_of = seg.Rows.of

    def counting_of(table: pa.Table) -> seg.Rows:
        decoded.append(table.num_rows)
        return real_of(table)

    monkeypatch.setattr(seg.Rows, "of", counting_of)
    cold = Archive.open(str(tmp_path / "archive"))
    project = str(normalize_project_id("Rare").key)
    ids = [f[f.index(b"i") + 1].decode() for _, f in read_project(cold, 0, project, START, None,
                                                                   100)]
    assert ids == rare
    back = read_project_before(cold, 0, project, None, 100)
    assert [f[f.index(b"i") + 1].decode() for _, f in back] == rare[::-1]
    paged = read_project(cold, 0, project, START, None, 2)
    after = read_project(cold, 0, project, paged[-1][0].decode(), None, 100)
    assert [f[1].decode() for _, f in paged + after] == rare
    assert decoded and max(decoded) <= 2, decoded  # a row group holds at most 2 of Rare's
