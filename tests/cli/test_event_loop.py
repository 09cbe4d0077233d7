"""``chatlog serve`` runs on uvloop when it is installed; an operator can choose
asyncio's own loop (CHATLOG_EVENT_LOOP / --event-loop), and a choice that cannot
be honoured is one line, before anything starts."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatlog.cli import cli
from chatlog.errors import ConfigError
from chatlog.tuning import serving_loop_factory
from tests.http.serving import Served


def test_the_choices() -> None:
    assert serving_loop_factory("asyncio") is None
    uvloop = pytest.importorskip("uvloop")
    assert serving_loop_factory("auto") is uvloop.new_event_loop
    assert serving_loop_factory("uvloop") is uvloop.new_event_loop


def test_uvloop_asked_for_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed
    assert serving_loop_factory("auto") is None
    with pytest.raises(ConfigError, match="CHATLOG_EVENT_LOOP"):
        serving_loop_factory("uvloop")
    result = CliRunner().invoke(cli, ["serve", "--event-loop", "uvloop"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "uvloop is not installed" in result.output


@pytest.mark.parametrize("args,env", [(["--event-loop", "tokio"], {}),
                                      ([], {"CHATLOG_EVENT_LOOP": "tokio"})])
def test_an_unknown_loop_is_refused(args: list[str], env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["serve", *args], env=env)
    assert result.exit_code == 2
    assert "Invalid value for '--event-loop'" in result.output


def test_serve_runs_on_asyncios_loop_when_told(short_tmp: Path) -> None:
    """(By default it runs on uvloop: every other test of serve.)"""
    served = Served(short_tmp / f"e{uuid.uuid4().hex[:6]}", CHATLOG_EVENT_LOOP="asyncio")
    assert served.stop() == 0, served.stderr
    assert "event loop: asyncio" in served.stderr
