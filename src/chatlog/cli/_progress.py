"""The one progress style of the long commands (``rebuild``, ``import``, ``archive``,
``migrate``, ``erase``), on stderr::

    rebuild ━━━━━━━━━━━━━━━━━━━━ 12,000/12,000 events 8,210 events/s elapsed 0:00:01 · left 0:00:00

When stderr is not a terminal (a pipe, a log file) the bar is drawn once, when it
ends; ``quiet`` draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

#: Columns of a bar drawn into a pipe or a file.
PIPED_WIDTH = 160
#: ``update(done, total)`` of one bar.
Update = Callable[[int, int], None]


def clock(seconds: float | None) -> str:
    """``0:00:01``; ``-:--:--`` when not known yet."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class TimesColumn(ProgressColumn):
    """``elapsed 0:00:01 · left 0:00:00``: both times, each with its name."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        left = 0.0 if task.finished else task.time_remaining
        return Text(f"elapsed {clock(elapsed or 0.0)} · left {clock(left)}",
                    style="progress.elapsed")


class RateColumn(ProgressColumn):
    """Units per second over the whole run (``8,210 events/s``)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} {self.unit}/s", style="progress.data.speed")


def columns(unit: str, *, rate: bool = True) -> list[ProgressColumn]:
    """The columns of every bar: label, bar, done/total unit, [rate,] both times."""
    shown: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
    ]
    if rate:
        shown.append(RateColumn(unit))
    shown.append(TimesColumn())
    return shown


class Bars:
    """Bars drawn together (one per partition, say); :meth:`bar` adds one."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def bar(self, label: str, total: int | None = None) -> Update:
        """A new bar named ``label``; returns its ``update(done, total)``."""
        progress = self._progress
        if progress is None:
            return _ignore
        task: TaskID = progress.add_task(label, total=total)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, done))

        return update


def _ignore(done: int, total: int) -> None:
    return None


@contextmanager
def progress_bars(unit: str = "events", *, quiet: bool = False, rate: bool = True,
                  console: Console | None = None) -> Iterator[Bars]:
    """Progress bars in the house style on stderr (none when ``quiet``)."""
    if quiet:
        yield Bars(None)
        return
    if console is None:
        console = Console(stderr=True)
        if not console.is_terminal:  # a log file: one whole line, not rich's 80 columns
            console.width = PIPED_WIDTH
    with Progress(*columns(unit, rate=rate), console=console, transient=False) as progress:
        yield Bars(progress)


@contextmanager
def progress_bar(label: str, unit: str = "events", *, quiet: bool = False,
                 rate: bool = True) -> Iterator[Update]:
    """One bar named ``label``; yields its ``update(done, total)``."""
    with progress_bars(unit, quiet=quiet, rate=rate) as bars:
        yield bars.bar(label)
