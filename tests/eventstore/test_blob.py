"""Binary payloads (an event's ``blob``) and the integrations' aggregate types."""

from __future__ import annotations

import orjson
import pydantic
import pytest

from chatlog.events import LangGraphCheckpoint, NewEvent, RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.codec import encode_body, split_body
from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationFold
from tests.helpers import message

BLOB = bytes(range(256)) * 4  # every byte value, not valid UTF-8


def checkpoint_event(blob: bytes = BLOB) -> NewEvent:
    key = normalize_project_id("Agents")
    return NewEvent.of(
        LangGraphCheckpoint(thread_id="thread-a", ns="", checkpoint_id="cp-1",
                            serde="msgpack"),
        project=key.key, project_name=key.display, aggregate_type="langgraph",
        aggregate_id="thread-a", blob=blob,
    )


async def test_a_blob_round_trips_as_raw_bytes(store: EventStore) -> None:
    plain = await store.append_one(message(content="plain"))
    result = await store.append_one(checkpoint_event())
    raw = dict(await store.read_raw(0, plain.position, limit=1))
    body = raw[result.position.encode()][b"b"]
    assert len(body) < len(BLOB) + 200  # stored as bytes, not base64 (which is 4/3 the size)
    doc, blob = split_body(body)
    assert blob == BLOB and orjson.loads(doc)["d"]["checkpoint_id"] == "cp-1"
    read = await store.read(0)
    assert read[0].blob is None and read[1].blob == BLOB
    agg = await store.read_aggregate(normalize_project_id("Agents").key, "langgraph", "thread-a")
    assert [e.blob for e in agg] == [BLOB]
    assert agg[0].typed_data() == LangGraphCheckpoint(thread_id="thread-a", ns="", checkpoint_id="cp-1",
                            serde="msgpack")


def test_json_carries_a_blob_as_base64_and_omits_an_absent_one() -> None:
    event = RecordedEvent(
        id=checkpoint_event().id, type="langgraph.checkpoint",
        project=normalize_project_id("Agents").key, project_name="Agents",
        aggregate_type="langgraph", aggregate_id="t", version=1, partition=0,
        position="1-0", time="2026-01-01T00:00:00Z", data={}, blob=b"\xff\x00",
    )
    doc = orjson.loads(event.model_dump_json())
    assert doc["blob"] == "_wA="
    assert RecordedEvent.model_validate_json(event.model_dump_json()).blob == b"\xff\x00"
    plain = event.model_copy(update={"blob": None})
    assert "blob" not in plain.model_dump(mode="json")
    assert encode_body(message()) [:1] == b"{"  # plain events are stored exactly as before


def test_aggregate_types_stay_validated() -> None:
    key = normalize_project_id("Agents")
    with pytest.raises(pydantic.ValidationError):
        NewEvent(type="x", project=key.key, project_name="Agents", aggregate_type="bogus",  # type: ignore[arg-type]
                 aggregate_id="a", data={})


def test_the_conversation_fold_skips_integration_entries() -> None:
    ev = checkpoint_event()
    flat = [b"i", str(ev.id).encode(), b"t", ev.type.encode(), b"a", ev.aggregate.encode(),
            b"v", b"1", b"b", encode_body(ev)]
    fold = ConversationFold()
    assert fold.rows([(b"1-0", flat)]) == []
    assert fold.final()[0] == []
