"""Fixtures for the projection tests: a read model file per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """Where this test's live read model lives (a real SQLite file)."""
    return tmp_path / "data" / "readmodel.sqlite"
