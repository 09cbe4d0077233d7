"""Fixtures of the cluster tests: dedicated clusters for tests that break them.

The shared 3-master cluster (``session_cluster``, ``cluster_url``) lives in
``tests/conftest.py``; a test that kills nodes forms its own here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatlog.testing import LocalCluster


@pytest.fixture
def cluster_factory(short_tmp: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Form clusters from the bundled binary; every node is stopped by pid after the test."""
    formed: list[LocalCluster] = []

    def form(**kwargs: object) -> LocalCluster:
        cluster = LocalCluster(short_tmp / f"c{uuid.uuid4().hex[:6]}", **kwargs)  # type: ignore[arg-type]
        formed.append(cluster)
        return cluster.start()

    yield form
    for cluster in formed:
        cluster.stop()
