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
