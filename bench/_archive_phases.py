"""The phases of ``bench_archive.py`` that run on the filled log: replay through the
store, ``chatlog rebuild`` from the archive beside the XRANGE-based rebuild of the
same events, and ``chatlog serve`` start-up and ``/v1/events`` paging.

``chatlog rebuild`` and ``chatlog serve`` run as real child processes (``python -m
chatlog``) on the bench's Valkey, with the settings a deployment would give them.
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from _common import ROOT
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.codec import START

#: Runs a command; prints its wall time, and the CPU time (user + system) and peak RSS
#: of it and its children.
_TIMED = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t,\n"
    "                  'cpu_s': u.ru_utime + u.ru_stime, 'peak_rss_mb': u.ru_maxrss / 1024}))\n"
)


def cli_env(url: str, prefix: str, data_dir: Path, archive: str, hot: int) -> dict[str, str]:
    """The environment of a ``chatlog`` child on the bench's log."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CHATLOG_REDIS_URL": url,
            "CHATLOG_KEY_PREFIX": prefix, "CHATLOG_DATA_DIR": str(data_dir),
            "CHATLOG_ARCHIVE_URL": archive, "CHATLOG_HOT_EVENTS": str(hot),
            "CHATLOG_LOG_LEVEL": "WARNING"}


async def replay_store(url: str, prefix: str, archive_dir: str | None, k: int) -> float:
    """Events/s of an ``EventStore.read_flat`` loop from the start (the tiered read when
    ``archive_dir`` is given), 1,000 a page."""
    store = await EventStore.open(url, prefix=prefix)
    if archive_dir is not None:
        store.archive = Archive.open(archive_dir)
    n, after = 0, START
    t0 = time.perf_counter()
    while n < k:
        page = await store.read_flat(0, after, min(1000, k - n))
        if not page:
            break
        n += len(page)
        after = page[-1][0].decode()
    rate = n / (time.perf_counter() - t0)
    await store.close()
    return rate


async def copy_log(url: str, archive_dir: str, prefix: str, to_prefix: str) -> int:
    """The whole log (archive, then hot tail) as one Redis stream under ``to_prefix``,
    same positions and content: what today's build would hold. Events copied."""
    src = await EventStore.open(url, prefix=prefix)
    src.archive = Archive.open(archive_dir)
    dst = await EventStore.open(url, prefix=to_prefix)
    key = dst.keys.log(0)
    copied, after = 0, START
    while True:
        page = await src.read_flat(0, after, 10_000)
        if not page:
            break
        pipe = dst.redis.pipeline(transaction=False)
        for pos, flat in page:
            pipe.xadd(key, dict(zip(flat[::2], flat[1::2], strict=True)), id=pos)
        await pipe.execute()
        copied += len(page)
        after = page[-1][0].decode()
    await src.close()
    await dst.close()
    return copied


def timed_rebuild(env: dict[str, str]) -> dict[str, Any]:
    """``chatlog rebuild -q`` end to end: seconds and peak RSS (MiB)."""
    compile_sources(Path(env["PYTHONPATH"]))
    out = subprocess.run([sys.executable, "-c", _TIMED, sys.executable, "-m", "chatlog",
                          "rebuild", "-q"], env=env, capture_output=True, text=True,
                         check=True)
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if doc["rc"]:
        raise RuntimeError(f"chatlog rebuild exited {doc['rc']}")
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Pager:
    """Pages ``/v1/events`` (limit 1000) from a cursor, timing each page."""

    def __init__(self, http: httpx.Client, after: str | None, k: int) -> None:
        self.http, self.cursor, self.left = http, after, k
        self.n = 0
        self.seconds = 0.0

    def page(self) -> bool:
        """One page; False once ``k`` events were read (or the log ended)."""
        if self.left <= 0:
            return False
        params: dict[str, Any] = {"limit": min(1000, self.left)}
        if self.cursor is not None:
            params["after"] = self.cursor
        t0 = time.perf_counter()
        doc = self.http.get("/v1/events", params=params).raise_for_status().json()
        self.seconds += time.perf_counter() - t0
        got = len(doc["events"])
        self.n += got
        self.left -= got
        self.cursor = doc["cursor"]
        if not got and not doc["has_more"]:
            self.left = 0
        return True

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


def _page_both(base: str, k: int, hot_cursor: str | None,
               hot_k: int) -> tuple[float, float, float, float]:
    """Events/s of paging ``/v1/events`` from the start (``k`` events, the archive) and
    from ``hot_cursor`` (``hot_k`` events, Redis), a page of each in turn: the load of
    the moment (the machine is shared) falls on both alike. The first page of each is
    timed apart (the process's first archived read imports pyarrow, once), then
    the rates of the pages after it; returns the rates, then the first pages' seconds."""
    with httpx.Client(base_url=base, timeout=60) as http:
        cold, hot = _Pager(http, None, k), _Pager(http, hot_cursor, hot_k)
        cold.page()
        hot.page()
        firsts = cold.seconds, hot.seconds
        cold.n = cold.seconds = hot.n = hot.seconds = 0
        while cold.page() | hot.page():
            pass
    return cold.rate, hot.rate, *firsts


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compile_sources(src: Path = ROOT / "src") -> None:
    """Byte-compile chatlog's sources, as installing it does (pip writes the ``.pyc``
    files). The bench runs chatlog from a checkout, and with
    PYTHONDONTWRITEBYTECODE set (as here) every ``chatlog serve`` or ``rebuild`` would
    otherwise compile its ~150 modules again: ~0.3 s of each start-up measured. (Its
    dependencies' byte-code is written when ``dev.py`` installs them.)"""
    compileall.compile_dir(str(src), quiet=1)


def serve_start(env: dict[str, str], *, page: tuple[int, str | None, int] | None = None,
                timeout: float = 900.0) -> dict[str, Any]:
    """Start ``chatlog serve``; seconds to listening and to ``/readyz`` 200, the CPU
    seconds the process had used by then (start-up work, apart from waiting for the
    shared machine's cores), and what /readyz said then. With ``page`` = (k, hot cursor,
    hot k): also /v1/events paging rates, from the start (archive) and from ``hot
    cursor`` (Redis), a page of each in turn. Stopped by pid."""
    compile_sources()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "chatlog", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    out: dict[str, Any] = {}
    try:
        while "listen_s" not in out:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"serve did not listen: {proc.stderr.read().decode()[-2000:]}"
                                   if proc.poll() is not None and proc.stderr else
                                   "serve did not listen in time")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    out["listen_s"] = time.perf_counter() - t0
                    out["listen_cpu_s"] = _cpu_seconds(proc.pid)
                    break
            time.sleep(0.01)
        with httpx.Client(base_url=base, timeout=10) as http:
            while True:
                r = http.get("/readyz")
                if r.status_code == 200:
                    out["ready_s"] = time.perf_counter() - t0
                    out["ready_cpu_s"] = _cpu_seconds(proc.pid)
                    out["readyz"] = r.json()
                    break
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"serve not ready in {timeout:.0f} s: {r.text[:500]}")
                time.sleep(0.01)
        if page is not None:
            k, hot_cursor, hot_k = page
            (out["events_archive"], out["events_redis"], out["first_page_archive_s"],
             out["first_page_redis_s"]) = _page_both(base, k, hot_cursor, hot_k)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


async def serve_phase(env: dict[str, str], reps: int,
                      page: tuple[int, str | None, int]) -> list[dict[str, Any]]:
    return [await asyncio.to_thread(serve_start, env, page=page) for _ in range(reps)]
