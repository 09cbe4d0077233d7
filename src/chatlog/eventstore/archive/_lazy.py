"""Modules imported on their first use.

Opening an :class:`~chatlog.eventstore.archive.Archive` and reading its manifests
(what ``chatlog serve`` does while it starts: the orchestrator's open-wait
snapshot, the tiered read's "is this cursor inside the archive?") needs no
pyarrow; importing pyarrow, numpy and their compute kernels cost ~0.25 CPU
seconds, a fifth of the service's start-up. So the archive's modules name
pyarrow through a :class:`LazyModule`, which imports it when an attribute is
first read (a segment is read or written), and the type checker sees the real
module (``if TYPE_CHECKING:`` imports beside it).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

_LOCK = threading.Lock()


class LazyModule:
    """Stands for module ``name`` until one of its attributes is read; then imports it
    and keeps each attribute read (later reads are plain attribute lookups)."""

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name

    def _load(self) -> ModuleType:
        module = self.__dict__.get("_module")
        if module is None:
            with _LOCK:  # readers in several threads: one import
                module = importlib.import_module(self.__dict__["_name"])
                self.__dict__["_module"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = getattr(self._load(), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<module {self.__dict__['_name']!r}, imported on first use>"
