"""Every command explains itself with --help (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import re

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


#: What each command does when no `chatlog serve` owns the data dir (issue 14: "say
#: which, in --help"): start a private Valkey while it runs, or need a running server.
PRIVATE_VALKEY = ["append", "archive", "dead-letters", "delete-before", "erase", "import",
                  "jobs", "migrate", "rebuild", "status", "tail", "trim"]
NEEDS_A_SERVER = ["worker"]


def test_every_command_says_what_it_does_without_a_server() -> None:
    assert set(PRIVATE_VALKEY + NEEDS_A_SERVER + ["serve"]) == set(COMMANDS)
    top = " ".join(CliRunner().invoke(cli, ["--help"], terminal_width=200).output.split())
    said = top[top.index("When no server runs"):]
    for name in PRIVATE_VALKEY + NEEDS_A_SERVER:
        assert name in said, f"chatlog --help does not say what {name} does without a server"
    for name in PRIVATE_VALKEY:
        text = " ".join(CliRunner().invoke(cli, [name, "--help"], terminal_width=200)
                        .output.split())
        assert re.search(r"starts a private (Valkey|one)|a private Valkey runs", text), name
    for name in NEEDS_A_SERVER:
        text = CliRunner().invoke(cli, [name, "--help"], terminal_width=200).output
        assert "Needs a running `chatlog serve`" in " ".join(text.split()), name
