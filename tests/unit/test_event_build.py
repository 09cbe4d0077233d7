"""NewEvent.of fills the envelope directly when its arguments are of their fields' types
(chatlog.event_build); the result must be the event pydantic's validation builds, and
anything else must still go through that validation."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlog.event_build import construct
from chatlog.events import (
    SCHEMA_VERSION,
    MessageAppended,
    NewEvent,
    WorkflowCreated,
    WorkflowStarted,
)
from chatlog.eventstore.codec import encode_body

PROJECT = uuid.UUID("6c1b0c5e-51f2-4b35-9a4d-0d8a3c6f2e11")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


def validated(data: Any, **kw: Any) -> NewEvent:
    """What NewEvent.of built before: every field through pydantic's validation."""
    return NewEvent(id=kw.pop("event_id"), id_supplied=True, type=data.event_type,
                    data=data.model_dump(mode="json"), **kw)


@given(content=st.text(max_size=50), role=st.text(min_size=1, max_size=64),
       metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       thread=st.text(min_size=1, max_size=30), blob=st.none() | st.binary(max_size=8))
def test_the_event_is_the_one_validation_builds(content: str, role: str,
                                                metadata: dict[str, Any], thread: str,
                                                blob: bytes | None) -> None:
    data = MessageAppended(thread_id=thread, role=role, content=content, metadata=metadata)
    event_id = uuid.uuid4()
    kw: dict[str, Any] = {"project": PROJECT, "project_name": "Blog", "aggregate_type": "thread",
                          "aggregate_id": thread, "blob": blob}
    fast = NewEvent.of(data, event_id=event_id, **kw)
    slow = validated(data, event_id=event_id, **kw)
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert encode_body(fast) == encode_body(slow)
    assert fast.schema_version == SCHEMA_VERSION and fast.id_supplied
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_a_server_made_id_and_data_with_datetimes() -> None:
    data = WorkflowCreated(start_timeout=5.0, deadline=datetime(2030, 1, 2, tzinfo=UTC))
    ev = NewEvent.of(data, project=PROJECT, project_name="Blog", aggregate_type="workflow",
                     aggregate_id="wf-1")
    assert not ev.id_supplied and ev.id.version == 4
    assert ev.data == data.model_dump(mode="json")
    assert isinstance(ev.data["deadline"], str)
    assert "run_timeout" not in ev.data  # the data model's own serializer still applies
    with pytest.raises(pydantic.ValidationError):  # still frozen
        ev.aggregate_id = "other"  # type: ignore[misc]


def test_arguments_of_other_types_are_validated_as_before() -> None:
    # A project key as text is converted, as validation always did.
    ev = NewEvent.of(WorkflowStarted(), project=str(PROJECT),  # type: ignore[arg-type]
                     project_name="Blog", aggregate_type="workflow", aggregate_id="wf-1")
    assert ev.project == PROJECT and type(ev.project) is uuid.UUID
    with pytest.raises(pydantic.ValidationError, match="aggregate_type"):
        NewEvent.of(WorkflowStarted(), project=PROJECT, project_name="Blog",
                    aggregate_type="galaxy", aggregate_id="wf-1")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="aggregate_id"):
        NewEvent.of(WorkflowStarted(), project=PROJECT, project_name="Blog",
                    aggregate_type="workflow", aggregate_id=7)  # type: ignore[arg-type]


def test_construct_sets_what_model_construct_sets() -> None:
    values = {"id": uuid.uuid4(), "id_supplied": False, "type": "t", "project": PROJECT,
              "project_name": "p", "aggregate_type": "thread", "aggregate_id": "a",
              "data": {"x": 1}, "schema_version": 1, "blob": None}
    made, reference = construct(NewEvent, dict(values)), NewEvent.model_construct(**values)
    assert made == reference
    assert made.model_fields_set == reference.model_fields_set
    assert made.__pydantic_extra__ == reference.__pydantic_extra__
    assert made.__pydantic_private__ == reference.__pydantic_private__
