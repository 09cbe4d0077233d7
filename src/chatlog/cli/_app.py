"""The click group, shared options and error handling of the ``chatlog`` command."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from chatlog.errors import ChatlogError
from chatlog.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", envvar="CHATLOG_REDIS_URL", default=None,
              help="Redis/Valkey URL (redis://, unix://, redis+cluster://). "
                   "Unset: the embedded Valkey under the data dir.  [env: CHATLOG_REDIS_URL]")
@click.option("--data-dir", envvar="CHATLOG_DATA_DIR", type=click.Path(path_type=Path),
              default=None, help="Where Valkey and SQLite keep data (default ./data).  "
                                 "[env: CHATLOG_DATA_DIR]")
@click.option("--partitions", envvar="CHATLOG_PARTITIONS", type=int, default=None,
              help="Log partitions; fixed when the log is created (default 1).  "
                   "[env: CHATLOG_PARTITIONS]")
@click.version_option(package_name="chatlog")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, data_dir: Path | None,
        partitions: int | None) -> None:
    """chatlog: the event log for AI-agent platforms.

    Every chat message and workflow transition is appended to a Redis Stream;
    SQLite read models, orchestrator waits and replay are built from it.
    Settings come from these options and CHATLOG_* environment variables.
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


def run_async(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async command body; chatlog errors become one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except ChatlogError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def main() -> None:
    cli(prog_name="chatlog")
