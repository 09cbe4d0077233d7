"""Every long command draws one progress style (issue 14): "elapsed 0:00:01 · left 0:00:00"."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from chatlog.cli._progress import TimesColumn, progress_bars
from chatlog.eventstore import EventStore
from chatlog.eventstore.embedded import EmbeddedValkey
from tests.helpers import message

CLI = Path(__file__).parents[2] / "src" / "chatlog" / "cli"
#: A finished bar, on one line even in a pipe:
#: "<label> ━━━ 5/5 events [N events/s] elapsed 0:00:00 · left 0:00:00".
FINISHED = r"{label} .* (\d+)/\1 {unit} .*elapsed \d+:\d\d:\d\d · left 0:00:00"


def test_progress_reads_elapsed_and_left() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with progress_bars(console=console) as bars:
        update = bars.bar("rebuild")
        update(10, 10)
    text = out.getvalue()
    assert re.search(r"rebuild .* 10/10 events [\d,]+ events/s elapsed 0:00:0\d · left 0:00:00",
                     text), text
    assert TimesColumn  # the column the bars end with


def test_no_command_draws_a_progress_bar_of_its_own() -> None:
    """The long commands draw through cli/_progress.py, never click's or rich's own."""
    for path in CLI.glob("*.py"):
        if path.name == "_progress.py":
            continue
        source = path.read_text()
        assert "click.progressbar" not in source, path.name
        assert "rich.progress" not in source, path.name


async def test_archive_migrate_erase_and_rebuild_show_the_same_bar(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str, tmp_path: Path
) -> None:
    source, target = valkey_factory(), valkey_factory()
    store = await EventStore.open(source.url, prefix=key_prefix)
    try:
        for i in range(20):
            await store.append_one(message("Blog", f"t{i % 2}", f"m{i}"))
    finally:
        await store.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")},
           "CHATLOG_REDIS_URL": source.url, "CHATLOG_KEY_PREFIX": key_prefix,
           "CHATLOG_DATA_DIR": str(tmp_path / "data"), "CHATLOG_HOT_EVENTS": "5",
           "CHATLOG_HOT_BYTES": "0"}

    def chatlog(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "chatlog", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    shown = {
        "archive": chatlog("archive"),
        "migrate": chatlog("migrate", "--to", target.url),
        "erase": chatlog("erase", "--project", "Blog", "--thread", "t0", "--yes"),
        "rebuild": chatlog("rebuild"),
    }
    assert "archiving p0" in shown["archive"] and "copying" in shown["migrate"]
    assert "erasing" in shown["erase"] and "rebuild" in shown["rebuild"]
    labels = {"archive": "archiving p0", "migrate": "copying", "erase": "erasing",
              "rebuild": "rebuild"}
    for command, stderr in shown.items():
        unit = "steps" if command == "erase" else "events"
        assert re.search(FINISHED.format(label=labels[command], unit=unit), stderr), \
            f"{command}: {stderr}"
    assert "6/6 steps" in shown["erase"]
    assert "20/20 events" in shown["migrate"]
    quiet = chatlog("migrate", "--to", target.url, "--quiet")
    assert "elapsed" not in quiet
