"""``chatlog serve``: the HTTP service, projector and orchestrator in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.errors import ConfigError
from chatlog.settings import Settings


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
@run_async
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
    from chatlog.eventstore.runtime import open_store
    from chatlog.http import TokenRegistry, create_app, running
    from chatlog.http.app import build_services

    tokens = TokenRegistry.load(settings.tokens_file, settings.project_namespace)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_store(settings) as opened:
            services = build_services(settings, opened.store)
            app = create_app(settings, opened.store, services=services, tokens=tokens)
            async with running(app, settings.host, settings.port) as runner:
                where = ", ".join(_url(a) for a in runner.addresses)
                auth = "tokens" if not tokens.open else "open access, loopback only"
                click.echo(f"chatlog listening on {where} (valkey: {opened.url}; {auth})")
                sys.stdout.flush()
                tune_runtime()
                await stop.wait()
                click.echo("chatlog stopping", err=True)
        click.echo("chatlog stopped", err=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


#: Young-generation threshold while serving (CPython's default is 700).
GC_THRESHOLD = (100_000, 50, 1000)
#: Seconds a thread may hold the GIL while another waits for it (CPython: 0.005).
SWITCH_INTERVAL = 0.001


def tune_runtime() -> None:
    """Keep garbage collection and the projector's thread out of the latency tail.

    Every request allocates many short-lived objects; with CPython's default
    thresholds the collector runs every few requests and, now and then, walks
    the whole heap. Freezing what start-up built and collecting the young
    generation less often took the HTTP append p99 from ~35 ms to ~24 ms in
    bench/bench_http.py (64 clients).

    The projector's thread holds the GIL while it folds a batch; with
    CPython's 5 ms switch interval the event loop could wait that long for
    it several times in one request. At 1 ms, HTTP append p99 was
    22.1-22.4 ms (best of 3) against 24.4-25.8 ms in alternating runs of the
    same benchmark, at the same throughput.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL)


def _url(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return str(address)
