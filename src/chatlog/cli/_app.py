"""The click group, shared options and error handling of the ``chatlog`` command."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from chatlog.errors import ChatlogError
from chatlog.settings import Settings
from chatlog.tuning import serving_loop_factory

F = TypeVar("F", bound=Callable[..., Any])

REDIS_URL_HELP = ("Redis/Valkey URL (redis://, unix://, redis+cluster://). Unset: the embedded "
                  "Valkey under the data dir.  [env: CHATLOG_REDIS_URL]")
DATA_DIR_HELP = "Where Valkey and SQLite keep data (default ./data).  [env: CHATLOG_DATA_DIR]"
PARTITIONS_HELP = ("Log partitions; fixed when the log is created (default 1).  "
                   "[env: CHATLOG_PARTITIONS]")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the subcommand: it overrides the group's value."""
    if value is not None and param.name is not None:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), param.name: value}
    return value


def global_options() -> list[click.Option]:
    """``--data-dir``, ``--redis-url`` and ``--partitions`` for one subcommand.

    The environment is read once, by the group; here only an explicit flag
    counts, so ``chatlog --data-dir A append --data-dir B`` uses B and
    ``CHATLOG_DATA_DIR=A chatlog append --data-dir B`` uses B too.
    """
    return [
        click.Option(["--data-dir"], type=click.Path(path_type=Path), default=None,
                     expose_value=False, callback=_remember, help=DATA_DIR_HELP),
        click.Option(["--redis-url"], default=None, expose_value=False, callback=_remember,
                     help=REDIS_URL_HELP),
        click.Option(["--partitions"], type=int, default=None, expose_value=False,
                     callback=_remember, help=PARTITIONS_HELP),
    ]


class ChatlogGroup(click.Group):
    """The ``chatlog`` group: every subcommand also takes the global options."""

    #: Sub-groups (``chatlog jobs``) are ChatlogGroups too, so their commands take them as well.
    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        have = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        cmd.params.extend(o for o in global_options() if not have & set(o.opts))
        super().add_command(cmd, name)


@click.group(cls=ChatlogGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", envvar="CHATLOG_REDIS_URL", default=None, help=REDIS_URL_HELP)
@click.option("--data-dir", envvar="CHATLOG_DATA_DIR", type=click.Path(path_type=Path),
              default=None, help=DATA_DIR_HELP)
@click.option("--partitions", envvar="CHATLOG_PARTITIONS", type=int, default=None,
              help=PARTITIONS_HELP)
@click.version_option(package_name="chatlog")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, data_dir: Path | None,
        partitions: int | None) -> None:
    """chatlog: the event log for AI-agent platforms.

    Every chat message and workflow transition is appended to a Redis Stream;
    SQLite read models, orchestrator waits and replay are built from it.
    Settings come from these options (accepted before or after the command)
    and CHATLOG_* environment variables.

    \b
    One owner per data dir: `chatlog serve` locks it. Commands that need the
    log use the running server's Valkey. When no server runs, append, tail
    --no-follow, status, delete-before (trim), rebuild, import, archive, erase,
    jobs, migrate and dead-letters start a private Valkey for as long as they
    run (safe: nothing else uses the log meanwhile); worker and tail --follow
    need a running server.
    """
    overrides: dict[str, Any] = {}
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if partitions is not None:
        overrides["partitions"] = partitions
    ctx.obj = overrides


def settings_from(ctx: click.Context, **more: Any) -> Settings:
    """The settings: environment, then the group's options, then the command's."""
    values = {**(ctx.find_root().obj or {}), **{k: v for k, v in more.items() if v is not None}}
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise click.ClickException(f"invalid setting {where}: {first['msg']}") from None


class _Notices(logging.Handler):
    """``chatlog.notice`` lines on the current stderr, as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


def _show_notices() -> None:
    notices = logging.getLogger("chatlog.notice")
    if not any(isinstance(h, _Notices) for h in notices.handlers):
        notices.addHandler(_Notices())
        notices.setLevel(logging.INFO)
        notices.propagate = False


def run_async(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async command body; chatlog errors become one line on stderr, notices
    (say, "no chatlog serve owns data dir …") a line each."""
    return _run_on(fn, serving=False)


def run_serving(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """:func:`run_async` on the serving loop (uvloop when importable:
    :func:`chatlog.tuning.serving_loop_factory`), for ``chatlog serve``."""
    return _run_on(fn, serving=True)


def _run_on(fn: Callable[..., Coroutine[Any, Any, Any]], *, serving: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _show_notices()
        loop_factory = serving_loop_factory() if serving else None  # (uvloop imported here)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(fn(*args, **kwargs))
        except ChatlogError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def main() -> None:
    cli(prog_name="chatlog")
