"""``chatlog serve``: the HTTP service, projector and orchestrator in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatlog.cli._app import cli, run_serving, settings_from
from chatlog.errors import ConfigError, EmbeddedServerError
from chatlog.settings import Settings
from chatlog.tuning import tune_runtime

if TYPE_CHECKING:
    from chatlog.eventstore.runtime import ValkeySupervisor


def check_bind(settings: Settings) -> None:
    """Refuse to serve beyond loopback when no tokens protect the projects."""
    if settings.binds_beyond_loopback and settings.tokens_file is None:
        raise ConfigError(
            f"refusing to listen on {settings.host or 'all interfaces'}: no tokens are "
            "configured, so anyone who can reach it could read and write every project; "
            "set CHATLOG_TOKENS_FILE (or --tokens-file), or listen on 127.0.0.1"
        )


@cli.command()
@click.option("--host", envvar="CHATLOG_HOST", default=None,
              help="Address to listen on (default 127.0.0.1). Anything beyond loopback "
                   "needs a tokens file.  [env: CHATLOG_HOST]")
@click.option("--port", envvar="CHATLOG_PORT", type=int, default=None,
              help="Port to listen on (default 8080; 0 = any free port).  [env: CHATLOG_PORT]")
@click.option("--tokens-file", envvar="CHATLOG_TOKENS_FILE", type=click.Path(path_type=Path),
              default=None, help="JSON file of bearer tokens scoped to projects (see README).  "
                                 "[env: CHATLOG_TOKENS_FILE]")
@click.option("--log-level", envvar="CHATLOG_LOG_LEVEL", default=None,
              help="DEBUG, INFO, WARNING...  [env: CHATLOG_LOG_LEVEL]")
@click.pass_context
@run_serving
async def serve(ctx: click.Context, host: str | None, port: int | None,
                tokens_file: Path | None, log_level: str | None) -> None:
    """Run chatlog: embedded Valkey (unless CHATLOG_REDIS_URL), projector, orchestrator, HTTP.

    Prints where it listens; Ctrl-C or SIGTERM stops it cleanly: the HTTP
    server first, then the orchestrator and projector, then the store and
    the embedded Valkey.
    """
    settings = settings_from(ctx, host=host, port=port, tokens_file=tokens_file,
                             log_level=log_level)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_bind(settings)
    # Imported here so `chatlog --help` stays fast.
    from chatlog.eventstore.runtime import ValkeySupervisor, open_store, own_data_dir
    from chatlog.http import STATE, TokenRegistry, create_app, running
    from chatlog.http.app import build_services

    tokens = TokenRegistry.load(settings.tokens_file, settings.project_namespace)
    check_port(settings)  # before Valkey, the orchestrator and the projector start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failure: list[str] = []
    try:
        async with own_data_dir(settings, "serve", create=True) as owned:
            url = owned.url
            async with open_store(settings, "serve", private=False, url=url) as opened:
                services = build_services(settings, opened.store)
                app = create_app(settings, opened.store, services=services, tokens=tokens)
                metrics = app[STATE].metrics
                supervisor = None
                if owned.embedded is not None:
                    def give_up(reason: str) -> None:
                        failure.append(reason)
                        stop.set()

                    supervisor = ValkeySupervisor(
                        owned, max_restarts=settings.valkey_max_restarts,
                        on_restart=metrics.valkey_restarts.inc, on_give_up=give_up,
                    )
                async with running(app, settings.host, settings.port) as runner, \
                        _supervising(supervisor):
                    where = ", ".join(_url(a) for a in runner.addresses)
                    owned.lock.record(address=where.split(", ")[0])
                    auth = "tokens" if not tokens.open else "open access, loopback only"
                    click.echo(f"chatlog listening on {where} (valkey: {url}; {auth})")
                    sys.stdout.flush()
                    tune_runtime()
                    await stop.wait()
                    click.echo("chatlog stopping", err=True)
        if failure:
            raise EmbeddedServerError(failure[0])
        click.echo("chatlog stopped", err=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def check_port(settings: Settings) -> None:
    """Fail early (one line) when the HTTP port is taken: nothing has started yet."""
    if not settings.port:
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}; "
                "choose another --port (or CHATLOG_PORT), or stop what uses it"
            ) from None


@contextlib.asynccontextmanager
async def _supervising(supervisor: ValkeySupervisor | None) -> AsyncIterator[None]:
    if supervisor is None:
        yield
        return
    task = asyncio.create_task(supervisor.run(), name="valkey-supervisor")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _url(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return str(address)
