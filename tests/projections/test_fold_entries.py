"""The rebuild's fold of hot-tail entries (``ConversationFold.rows``, inlined per entry):
the same rows and thread states as the archive's columnar fold of the same events,
whatever the order of an entry's fields."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pyarrow as pa

from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationFold

PROJECT = str(normalize_project_id("Blog").key)

Event = tuple[str, str, str, int, str, dict[str, Any]]  # position, id, aggregate, version, type, data


def _events() -> list[Event]:
    thread = f"{PROJECT}/thread/t1"
    other = f"{PROJECT}/thread/t2"
    msg = "message.appended"
    return [
        ("10-0", str(uuid.uuid4()), thread, 1, msg, {"role": "user", "content": "a"}),
        ("10-1", str(uuid.uuid4()), other, 1, msg,
         {"role": "assistant", "content": "b", "metadata": {"model": "m", "n": [1, 2.5]}}),
        ("11-0", str(uuid.uuid4()), f"{PROJECT}/workflow/w1", 1, "workflow.created",
         {"name": "x"}),
        ("11-1", str(uuid.uuid4()), f"{PROJECT}/job/j1", 1, msg,  # not a thread: skipped
         {"role": "user", "content": "c"}),
        ("12-0", str(uuid.uuid4()), thread, 2, msg, {"content": "no role"}),  # invalid
        ("12-1", str(uuid.uuid4()), thread, 3, msg,
         {"role": "user", "content": "d", "created_at": "2020-01-02T03:04:05",
          "metadata": {}}),
        ("13-0", str(uuid.uuid4()), other, 2, msg,
         {"role": "user", "content": "e", "metadata": None, "created_at": "not a date"}),
    ]


def _body(data: dict[str, Any]) -> bytes:
    return orjson.dumps({"n": "Blog", "d": data, "s": 1})


def _entries(events: list[Event], *, xadd_order: bool) -> list[tuple[bytes, list[bytes]]]:
    out = []
    for pos, event_id, aggregate, version, type_, data in events:
        pairs = [(b"i", event_id.encode()), (b"t", type_.encode()), (b"a", aggregate.encode()),
                 (b"v", str(version).encode()), (b"b", _body(data))]
        if not xadd_order:
            pairs.reverse()
        out.append((pos.encode(), [x for pair in pairs for x in pair]))
    return out


def _batch(events: list[Event]) -> pa.RecordBatch:
    return pa.record_batch({
        "position": pa.array([e[0] for e in events], pa.string()),
        "event_id": pa.array([e[1] for e in events], pa.string()),
        "aggregate": pa.array([e[2] for e in events], pa.string()),
        "version": pa.array([e[3] for e in events], pa.int64()),
        "type": pa.array([e[4] for e in events], pa.string()),
        "time": pa.array([int(e[0].split("-")[0]) for e in events],
                         pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "body": pa.array([_body(e[5]) for e in events], pa.binary()),
    })


def test_entries_fold_like_the_columnar_path_in_any_field_order() -> None:
    events = _events()
    folds = {"columnar": ConversationFold(), "xadd": ConversationFold(),
             "other": ConversationFold()}
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in folds}
    for part in (events[:3], events[3:]):  # threads span two chunks
        rows["columnar"] += folds["columnar"].rows_batch(_batch(part))
        rows["xadd"] += folds["xadd"].rows(_entries(part, xadd_order=True))
        rows["other"] += folds["other"].rows(_entries(part, xadd_order=False))
    assert rows["xadd"] == rows["columnar"] == rows["other"]
    assert [r[5] for r in rows["xadd"]] == ["a", "b", "d", "e"]
    assert rows["xadd"][1][6] == '{"model":"m","n":[1,2.5]}'
    assert rows["xadd"][2][6] == "{}" and rows["xadd"][3][6] == "{}"
    assert rows["xadd"][2][7] == 1577934245000  # its own created_at
    assert rows["xadd"][3][7] == 13  # unparseable: the append time
    finals = {name: fold.final() for name, fold in folds.items()}
    assert finals["xadd"] == finals["columnar"] == finals["other"]
    threads, projects, invalid = finals["xadd"]
    assert invalid == 1
    assert [(t[1], t[2], t[3]) for t in threads] == [("t1", 2, 3), ("t2", 2, 2)]
    assert projects == [(PROJECT, "Blog", 2, 4, 10, 1577934245000)]  # the latest message time
