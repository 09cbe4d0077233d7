#!/usr/bin/env python3
"""Set up chatlog in a local virtual environment and run it, or its tests.

    python3 dev.py serve [chatlog serve options]   # run the service (embedded Valkey)
    python3 dev.py test  [pytest options]          # lint, type-check and run every test
                                                   # (in 2-4 processes; -n0: in one)

Needs only python3 (3.11+). The virtual environment lives in .venv/ and is
refreshed whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".chatlog-installed"


def _run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _have_root_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(*packages: str) -> None:
    _run(["apt-get", "update", "-q"])
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_venv(extras: str) -> None:
    # (the salt: what an install does beyond pip; changing it redoes older installs)
    salt = b"\0bytecode-1"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()
                          + salt).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        try:
            _run([sys.executable, "-m", "venv", str(VENV)])
        except subprocess.CalledProcessError:
            # Debian's python3 ships without ensurepip; python3-venv brings it.
            if not _have_root_apt():
                sys.exit("error: cannot create a virtual environment; install python3-venv")
            shutil.rmtree(VENV, ignore_errors=True)
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            _apt_install(f"python{ver}-venv")
            _run([sys.executable, "-m", "venv", str(VENV)])
    # --no-compile: byte-code is written on first import instead, only for the modules
    # used (compiling every installed file took half of a fresh test set-up).
    _run([str(PY), "-m", "pip", "install", "-q", "--no-compile", "--upgrade", "pip"])
    _run([str(PY), "-m", "pip", "install", "-q", "--no-compile", "-e",
          f".[{extras}]" if extras else "."], cwd=ROOT)
    _write_dependency_bytecode()
    STAMP.write_text(want)


#: A child that imports every module of chatlog (and the test tools, where installed),
#: so that their imports, and theirs, are compiled once.
_IMPORT_ALL = """
import importlib, pkgutil, chatlog
for mod in pkgutil.walk_packages(chatlog.__path__, "chatlog.", onerror=lambda name: None):
    if not mod.name.endswith("__main__"):
        try:
            importlib.import_module(mod.name)
        except Exception:  # an optional extra that is not installed
            pass
for name in ("pytest", "xdist", "hypothesis", "httpx", "playwright.sync_api"):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def _write_dependency_bytecode() -> None:
    """Write the byte-code of the installed modules chatlog uses, once per install.

    pip installs with --no-compile, which counts on Python writing byte-code on first
    import; where PYTHONDONTWRITEBYTECODE is set (this machine sets it) nothing ever
    writes it, and every process compiled its imports again: ~1 s of CPU at each
    start of ``chatlog serve``, of a CLI command and of each test's child process.
    """
    print("+ writing the byte-code of the modules chatlog imports", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if subprocess.run([str(PY), "-c", _IMPORT_ALL], cwd=ROOT, env=env).returncode != 0:
        print("warning: could not write all of it; chatlog starts slower", file=sys.stderr)


def write_source_bytecode() -> None:
    """Byte-code of chatlog's own source (src/): only the files changed since the last
    time are compiled (compileall compares each file's time and size). A checkout it
    cannot write to only starts slower."""
    subprocess.run([str(PY), "-m", "compileall", "-q", str(ROOT / "src")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: Test-only programs from Debian: the browser tests drive chromium, and the
#: event-log contract also runs against a real Redis 7 (redis-server).
TEST_PROGRAMS = {"chromium": "chromium", "redis-server": "redis-server"}


def ensure_test_programs() -> None:
    """Install the test-only Debian packages that are missing (as root, with apt)."""
    missing = [pkg for cmd, pkg in TEST_PROGRAMS.items() if not shutil.which(cmd)]
    if missing and _have_root_apt():
        _apt_install(*missing)


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test"}:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "serve":
        ensure_venv("")
        write_source_bytecode()
        os.execv(str(VENV / "bin" / "chatlog"), ["chatlog", "serve", *rest])
    ensure_venv("test,bench")
    write_source_bytecode()
    ensure_test_programs()
    os.chdir(ROOT)
    failed = []
    for name, check in (("ruff", ["ruff", "check", "src", "tests", "bench"]), ("mypy", ["mypy"])):
        print("+", " ".join(check), flush=True)
        if subprocess.run([str(VENV / "bin" / check[0]), *check[1:]]).returncode != 0:
            failed.append(name)
    # Two (or more) test processes, each with its own servers, a test module's tests in
    # one of them (module fixtures are built once): most tests wait on fsyncs, child
    # processes and servers, so two halve the time on two cores. `-n0` runs in one.
    # The slowest tests are listed at the end: the whole suite must stay under 10 minutes.
    workers = str(min(4, max(2, os.cpu_count() or 2)))
    code = subprocess.run([str(PY), "-m", "pytest", "-n", workers, "--dist", "loadfile",
                           "--durations=15", *rest]).returncode
    if code != 0:
        failed.append("pytest")
    if failed:
        print(f"error: {', '.join(failed)} failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
