"""Every command explains itself with --help (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from chatlog.cli import cli

COMMANDS = sorted(cli.commands)


def test_the_core_commands_exist() -> None:
    assert {"append", "tail", "status", "trim"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    assert command.help and len(command.help.strip()) > 20, f"{name} needs a docstring"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"chatlog {name} {param.opts[0]} needs help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_the_global_options_after_its_name(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--data-dir", "--redis-url", "--partitions"):
        assert option in result.output, f"chatlog {name} --help does not show {option}"


def test_a_global_option_after_the_command_wins(tmp_path) -> None:
    """`chatlog --data-dir A status --data-dir B` reads B (and says there is no data in B)."""
    a, b = tmp_path / "a", tmp_path / "b"
    result = CliRunner().invoke(cli, ["--data-dir", str(a), "status", "--data-dir", str(b)],
                                env={"CHATLOG_REDIS_URL": None, "CHATLOG_DATA_DIR": None})
    assert result.exit_code == 1
    assert f"no chatlog data here ({b})" in result.output
    assert not a.exists() and not b.exists()
