"""The store's shape: one topology seam, no import circle, one log scanner.

Architecture checks read the source (fast, no server); the scanner methods
that projections use instead of their own Redis clients run on the real store.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chatlog.eventstore import EventStore
from tests.helpers import message

SRC = Path(__file__).resolve().parents[2] / "src" / "chatlog"
#: The modules that may know the topology: the seam itself and the cluster client.
TOPOLOGY_MODULES = {"eventstore/_topology.py", "eventstore/cluster.py"}


def _modules() -> dict[str, Path]:
    return {str(p.relative_to(SRC)): p for p in SRC.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every chatlog module ``path`` imports, at any depth (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("chatlog"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("chatlog"))
    return found


def test_the_eventstore_package_has_no_import_circle() -> None:
    names = {f"chatlog.{rel[:-3].replace('/', '.')}": path
             for rel, path in _modules().items()
             if rel.startswith("eventstore/") and not rel.endswith("__init__.py")}
    graph = {name: {m for m in _imports(path) if m in names and m != name}
             for name, path in names.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert circles == [], f"modules in an import circle: {circles}"


def test_no_topology_branch_outside_the_seam() -> None:
    branch = re.compile(r"\bif\b.*\bis_cluster\b|isinstance\([^)]*RedisCluster")
    offenders = [
        f"{rel}:{n}: {line.strip()}"
        for rel, path in sorted(_modules().items()) if rel not in TOPOLOGY_MODULES
        for n, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)
    ]
    assert offenders == []


def test_the_serving_path_does_not_import_the_test_harness() -> None:
    users = [rel for rel, path in _modules().items()
             if rel != "testing.py" and "chatlog.testing" in _imports(path)]
    assert users == []


def test_projections_read_the_log_only_through_the_store() -> None:
    for rel in ("projections/_reader.py", "projections/lag.py"):
        text = (SRC / rel).read_text()
        assert "connect(" not in text and "xinfo" not in text and ".redis" not in text, rel


async def test_scan_flat_reads_every_kept_entry_in_chunks(store: EventStore) -> None:
    results = [await store.append_one(message(content=str(i))) for i in range(25)]
    chunks = [chunk async for chunk in store.scan_flat(0, chunk=10)]
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [e for c in chunks for e in c] == await store.read_flat(0, limit=100)
    await store.trim(0, results[5].position)
    kept = [e for c in [c async for c in store.scan_flat(0, chunk=7)] for e in c]
    assert [pos.decode() for pos, _ in kept] == [r.position for r in results[5:]]


async def test_scan_flat_stops_cleanly_when_the_caller_stops(store: EventStore) -> None:
    for i in range(5):
        await store.append_one(message(content=str(i)))
    scan = store.scan_flat(0, chunk=2)
    async for _ in scan:
        break
    await scan.aclose()  # type: ignore[attr-defined]
    assert len(await store.read_flat(0)) == 5  # the store still answers


async def test_log_info_says_where_a_reader_stands(store: EventStore) -> None:
    empty = await store.log_info(0)
    assert (empty.length, empty.added, empty.head, empty.next_position) == (0, 0, None, None)
    results = [await store.append_one(message(content=str(i))) for i in range(6)]
    info = await store.log_info(0, results[3].position)
    assert info.length == info.added == 6
    assert info.head == results[-1].position and info.next_position == results[4].position
    await store.trim(0, results[2].position)
    info = await store.log_info(0, results[-1].position)
    assert (info.length, info.added, info.next_position) == (4, 6, None)


async def test_log_info_checks_the_partition(store: EventStore) -> None:
    with pytest.raises(Exception, match="partition 3 does not exist"):
        await store.log_info(3)
