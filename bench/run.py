#!/usr/bin/env python3
"""Run chatlog's benchmarks, one after another, and summarise them.

    python3 bench/run.py [--quick] [names...]

Runs every ``bench/bench_*.py`` (or only the named ones: ``append`` or
``bench_append``) as a subprocess with the project's virtual environment,
passing ``--quick`` through; shows each one's output as it runs; collects the
JSON object each prints as its last line; prints a summary table and writes
everything to ``artifacts/bench/results-<date>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _table import format_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"


def discover() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def run_one(python: str, path: Path, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one benchmark, echoing its output; its parsed last JSON line (or an error)."""
    cmd = [python, str(path), *(["--quick"] if quick else [])]
    name = path.stem.removeprefix("bench_")
    print(f"\n=== {path.name}{' --quick' if quick else ''}", flush=True)
    started = time.monotonic()
    last_json: dict[str, Any] | None = None
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    timer = threading.Timer(timeout, proc.kill)  # a hung bench is killed by its pid
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            stripped = line.strip()
            if stripped.startswith("{") and stripped.endswith("}"):
                try:
                    parsed = json.loads(stripped)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    last_json = parsed
                    continue  # the machine-readable line: keep the terminal readable
            if stripped:
                last_json = None
            print(line, end="", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if not timer.is_alive() and time.monotonic() - started >= timeout:
        return {"name": name, "error": f"killed after {timeout:g} s"}
    elapsed = round(time.monotonic() - started, 1)
    if code != 0:
        return {"name": name, "error": f"exited with status {code}", "elapsed_s": elapsed}
    if last_json is None or "results" not in last_json:
        return {"name": name, "error": "its last line was not a JSON object with results",
                "elapsed_s": elapsed}
    last_json.setdefault("name", name)
    last_json["elapsed_s"] = elapsed
    return last_json


def summary_table(outcomes: list[dict[str, Any]]) -> str:
    headers = ["bench", "metric", "best", "median", "unit", "ratio", "goal", "met"]
    rows: list[list[Any]] = []
    for o in outcomes:
        if "error" in o:
            rows.append([o["name"], f"FAILED: {o['error']}", "", "", "", "", "", ""])
            continue
        for r in o.get("results", []):
            rows.append([
                o["name"], r.get("metric"), r.get("value"), r.get("median"), r.get("unit"),
                r.get("ratio"), r.get("goal", ""), r.get("goal_met"),
            ])
    return format_table(headers, rows, left=(0, 1, 4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark before it is killed (default 1800, 300 quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench",
                        help="directory for results-<date>.json")
    args = parser.parse_args(argv)

    available = discover()
    wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.names] or list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; there are: {', '.join(available)}")
    python = str(VENV_PY) if VENV_PY.exists() else sys.executable
    timeout = args.timeout or (300.0 if args.quick else 1800.0)

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    outcomes = [run_one(python, available[n], args.quick, timeout) for n in wanted]

    print("\n=== summary (best and median of each benchmark's repetitions; "
          "ratio as each defines it, see bench/README.md)")
    print(summary_table(outcomes), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"results-{time.strftime('%Y-%m-%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps({
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "benchmarks": outcomes,
    }, indent=2) + "\n")
    print(f"\nresults written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    failed = [o["name"] for o in outcomes if "error" in o]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
