"""``chatlog rebuild``, ``chatlog import`` and the projection section of ``chatlog status``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatlog.cli import cli


@pytest.fixture
def env(redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    return {"CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix,
            "CHATLOG_DATA_DIR": str(tmp_path / "data")}


def test_help() -> None:
    runner = CliRunner()
    for command in ("rebuild", "import"):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    assert "switch" in runner.invoke(cli, ["rebuild", "--help"]).output


def test_import_rebuild_status(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "legacy.jsonl"
    src.write_text("\n".join(json.dumps(d) for d in [
        {"project_id": "Blog-Project", "thread_id": "null", "role": "user", "content": "a"},
        {"project_id": "blog-project", "thread_id": "t-1", "role": "user", "content": "b"},
    ]) + "\n")
    runner = CliRunner()
    first = runner.invoke(cli, ["import", str(src)], env=env)
    assert first.exit_code == 0, first.output
    assert "imported 2 messages" in first.output
    again = runner.invoke(cli, ["import", str(src)], env=env)
    assert again.exit_code == 0 and "imported 0 messages" in again.output
    assert "2 already present" in again.output

    rebuilt = runner.invoke(cli, ["rebuild"], env=env)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt" in rebuilt.output and "2 events" in rebuilt.output

    status = runner.invoke(cli, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    doc = json.loads(status.output)
    assert doc["projection"]["events_behind"] == 0
    assert doc["projection"]["seconds_behind"] == 0
    assert doc["projection"]["caught_up"] is True


def test_status_before_any_read_model(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["projection"]["state"] == "not built yet"


def test_import_of_a_bad_file_is_one_line_and_exit_1(env: dict[str, str],
                                                     tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"project_id": "a", "role": "user", "content": "fine"}\n'
                   '{"project_id": "a", "role": "", "content": "empty role"}\n')
    result = CliRunner().invoke(cli, ["import", str(src)], env=env)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("Error: ") and "line 2: role" in lines[0]
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["import", str(tmp_path / "nope.jsonl")], env=env)
    assert missing.exit_code == 1 and "cannot read" in missing.output


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in tables if t != "projector_meta"}  # (when and which build)
    finally:
        conn.close()


def test_rebuild_in_one_process_or_two_switches_to_the_same_model(
        env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "legacy.jsonl"
    src.write_text("\n".join(json.dumps(
        {"project_id": f"P{i % 3}", "thread_id": f"t-{i % 7}", "role": "user",
         "content": f"m{i}"}) for i in range(60)) + "\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["import", str(src)], env=env).exit_code == 0
    models = []
    for flag in ("--one-process", "--processes"):
        rebuilt = runner.invoke(cli, ["rebuild", "-q", flag], env=env)
        assert rebuilt.exit_code == 0, rebuilt.output
        assert "60 events" in rebuilt.output
        models.append(_rows(Path(env["CHATLOG_DATA_DIR"]) / "readmodel.sqlite"))
    assert models[0] == models[1]
    assert any(len(rows) >= 60 for rows in models[0].values())


def test_rebuild_uses_two_processes_for_a_big_log_where_two_cpus_may_run_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from chatlog.cli.readmodel import two_processes_by_default

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert two_processes_by_default(10_000_000) is False
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert two_processes_by_default(10_000_000) is True
    assert two_processes_by_default(1_000) is False  # (a small log: the child's start)
    help_text = CliRunner().invoke(cli, ["rebuild", "--help"]).output
    assert "--processes / --one-process" in help_text
