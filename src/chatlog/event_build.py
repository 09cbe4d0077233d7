"""Building :class:`~chatlog.events.NewEvent` envelopes on the hot paths.

Validating the envelope is half of what ``NewEvent.of`` cost (~8 of ~18 us
per event): the UUIDs, strings and the data dict are checked again although
the caller's typed arguments and the data model's own dump are already what
the fields hold. :func:`new_event_of` checks the argument types with a few
``type() is`` tests and fills the model directly (as ``model_construct`` does,
without its per-field loop); anything else (a project key given as text, an
unknown aggregate type) goes through pydantic's validation as before, so bad
input fails exactly as it did.
"""

from __future__ import annotations

import typing
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from chatlog.identity import random_uuid

if TYPE_CHECKING:
    from chatlog.events import EventData, NewEvent

__all__ = ["construct", "new_event_of"]

M = TypeVar("M", bound=BaseModel)

_set_attribute = object.__setattr__
_UUID = uuid.UUID
_FIELDS_SET = frozenset({"id", "id_supplied", "type", "project", "project_name",
                         "aggregate_type", "aggregate_id", "data", "schema_version", "blob"})
_plain: dict[type[Any], bool] = {}
_schema_version: dict[type[Any], int] = {}
#: Per envelope class: its aggregate types when it can be filled directly, else empty.
_fast: dict[type[Any], frozenset[str]] = {}


def plain_model(cls: type[BaseModel]) -> bool:
    """True when filling ``cls``'s ``__dict__`` is all ``model_construct`` would do
    (no post-init hook, no extra fields kept, not a root model)."""
    return (not cls.__pydantic_post_init__ and cls.model_config.get("extra") != "allow"
            and not cls.__pydantic_root_model__)


def construct(cls: type[M], values: dict[str, Any]) -> M:
    """``cls.model_construct(**values)`` for ``values`` of every field (trusted: not
    validated), without model_construct's loop over the fields."""
    plain = _plain.get(cls)
    if plain is None:
        plain = _plain[cls] = plain_model(cls)
    if not plain:  # pragma: no cover - the model grew a hook
        return cls.model_construct(**values)
    model = cls.__new__(cls)
    _set_attribute(model, "__dict__", values)
    _set_attribute(model, "__pydantic_fields_set__", set(values))
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


def _aggregate_types_of(cls: type[BaseModel]) -> frozenset[str]:
    """The aggregate types ``cls`` accepts when it can be filled directly (its fields
    are the ones :func:`new_event_of` fills), else none (always validate)."""
    known = _fast.get(cls)
    if known is None:
        fields = cls.model_fields
        fillable = plain_model(cls) and fields.keys() == _FIELDS_SET
        known = _fast[cls] = (frozenset(typing.get_args(fields["aggregate_type"].annotation))
                              if fillable else frozenset())
        _schema_version[cls] = fields["schema_version"].default
    return known


def new_event_of(
    cls: type[NewEvent],
    data: EventData,
    project: uuid.UUID,
    project_name: str,
    aggregate_type: str,
    aggregate_id: str,
    event_id: uuid.UUID | None,
    blob: bytes | None,
) -> NewEvent:
    """What ``NewEvent.of`` builds (see there); validated only when an argument is
    not already of its field's type."""
    supplied = event_id is not None
    data_dict = data.__pydantic_serializer__.to_python(data, mode="json")
    if (type(project) is _UUID and type(project_name) is str and type(aggregate_id) is str
            and (event_id is None or type(event_id) is _UUID)
            and (blob is None or type(blob) is bytes)
            and aggregate_type in _aggregate_types_of(cls)
            and type(data_dict) is dict):
        return construct(cls, {
            "id": event_id or random_uuid(), "id_supplied": supplied, "type": data.event_type,
            "project": project, "project_name": project_name,
            "aggregate_type": aggregate_type, "aggregate_id": aggregate_id,
            "data": data_dict, "schema_version": _schema_version[cls],
            "blob": blob,
        })
    return cls(
        id=event_id or random_uuid(), id_supplied=supplied, type=data.event_type,
        project=project, project_name=project_name, aggregate_type=aggregate_type,
        aggregate_id=aggregate_id, data=data_dict, blob=blob,
    )
