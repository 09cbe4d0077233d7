"""The progress bar of rebuild and import names both of its times."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from chatlog.cli.readmodel import TimesColumn


def test_progress_reads_elapsed_and_left() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with Progress(TimesColumn(), console=console, transient=False, auto_refresh=False) as bar:
        task = bar.add_task("rebuild", total=10)
        bar.update(task, completed=10)
        bar.refresh()
    text = out.getvalue()
    assert "elapsed 0:00:00 · left 0:00:00" in text, text
    assert "left" in text and "elapsed" in text
