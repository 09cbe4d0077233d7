"""``dev.py``'s virtual environment holds the byte-code of what chatlog imports.

pip installs with ``--no-compile``; where PYTHONDONTWRITEBYTECODE is set, Python then
never writes byte-code, and every chatlog process (``serve``, each CLI command, each
test's child process) compiled redis, pydantic, aiohttp and chatlog again: about a
second of CPU at each start. ``dev.py`` writes it once per install.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAMP = ROOT / ".venv" / ".chatlog-installed"

#: Modules every chatlog process imports, from the dependencies and from chatlog.
IMPORTED = ("redis.commands.core", "pydantic.main", "aiohttp.web", "click.core",
            "chatlog.cli", "chatlog.eventstore.store")


@pytest.mark.skipif(not STAMP.exists() or Path(sys.prefix) != ROOT / ".venv",
                    reason="not running in the virtual environment dev.py installed")
@pytest.mark.parametrize("name", IMPORTED)
def test_imported_modules_have_byte_code(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    cached = Path(importlib.util.cache_from_source(module.__file__))
    assert cached.exists(), f"no byte-code for {name}: expected {cached}"
