"""The package's shape (issue 11): one vocabulary, typed edges, private names kept private,
small modules, no dead code. These read the source or import the modules; no server."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from chatlog import events
from chatlog.erasure import Eraser
from chatlog.eventstore.archiver import Archiver
from chatlog.http import Services
from chatlog.orchestrator import Orchestrator
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel

SRC = Path(__file__).resolve().parents[2] / "src" / "chatlog"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    return {str(p.relative_to(SRC)): p for p in SRC.rglob("*.py")}


def _module_name(rel: str) -> str:
    name = "chatlog." + rel[:-3].replace("/", ".")
    return name.removesuffix(".__init__")


def test_every_event_model_names_its_type_in_a_classvar() -> None:
    text = (SRC / "events.py").read_text()
    assert "type: ignore" not in text
    assert not re.search(r"\bcls\.event_type\s*=", text)  # no assignment at run time
    for name in events.known_types():
        model = events.data_model(name)
        assert model is not None and model.event_type == name
        assert "event_type" in typing.get_type_hints(model, include_extras=True)
    assert set(events.STATE_AFTER) <= set(events.known_types())
    assert set(events.TERMINAL) <= set(events.WORKFLOW_STATES)


def test_no_state_table_is_copied_outside_events() -> None:
    literal = re.compile(r'"workflow\.[a-z_]+"\s*:\s*')
    copies = [rel for rel, path in _modules().items()
              if rel != "events.py" and literal.search(path.read_text())]
    assert copies == [], f"event type -> state tables outside events.py: {copies}"


def test_the_http_state_holds_the_real_service_types() -> None:
    hints = typing.get_type_hints(Services)
    assert hints == {
        "projector": Projector | None,
        "read_model": ReadModel | None,
        "orchestrator": Orchestrator | None,
        "eraser": Eraser | None,
        "archiver": Archiver | None,
    }


def test_no_import_guards_for_the_packages_own_modules() -> None:
    for rel in ("http/app.py", "projections/registry.py"):
        assert "except ImportError" not in (SRC / rel).read_text(), rel
    assert "_conn()" not in (SRC / "http" / "workflows.py").read_text()


def test_no_private_name_is_imported_across_packages() -> None:
    """``_name`` is for its own module; a ``_module`` for its own package."""
    offenders = []
    for rel, path in _modules().items():
        here = _module_name(rel)
        package = here if rel.endswith("__init__.py") else here.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("chatlog")):
                continue
            names = [*node.module.split("."), *(a.name for a in node.names)]
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if not private:
                continue
            # A private module or name may be imported within the package that owns it.
            owner = node.module.split("._", 1)[0] if "._" in node.module else node.module
            if not (package == owner or package.startswith(owner + ".")):
                offenders.append(f"{rel}: from {node.module} import "
                                 f"{', '.join(a.name for a in node.names)}")
    assert offenders == []


def test_modules_stay_small() -> None:
    big = {rel: n for rel, path in _modules().items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"modules over {MAX_LINES} lines: {big}"


def test_dead_code_is_gone() -> None:
    from chatlog.cli import log
    from chatlog.http import metrics, models
    from chatlog.orchestrator import machine
    from chatlog.projections import _db, workflows

    assert not hasattr(log, "event_json")
    assert not hasattr(metrics.Metrics, "lag_from")
    assert not hasattr(models, "PositionQuery")
    assert not hasattr(_db, "PROJECTOR_TABLES")
    assert not hasattr(machine.WorkflowState, "terminal")
    assert not hasattr(workflows, "open_waits") and not hasattr(workflows, "workflow_history")
