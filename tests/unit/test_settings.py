"""Settings that the service cannot honour are refused when it starts, not at the first
request that uses them (an adversarial pass: ``CHATLOG_START_TIMEOUT=inf`` started, then
every workflow create answered 500; ``CHATLOG_IDEMPOTENCY_WINDOW=inf`` killed serve with
a traceback; ``CHATLOG_ARCHIVE_LEASE=1e300`` failed every archiver pass)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from chatlog.settings import MAX_SECONDS, Settings

ODD = ["inf", "-inf", "nan", "1e300", str(MAX_SECONDS * 2)]
DURATIONS = ["start_timeout", "approval_timeout", "archive_lease", "idempotency_window",
             "outcome_window", "job_lease", "run_timeout", "hot_seconds"]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", ODD)
def test_a_duration_past_what_can_be_kept_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})


def test_every_float_setting_is_bounded() -> None:
    """A new float setting gets the same check (the rule is the model's, not a field's)."""
    floats = [n for n, f in Settings.model_fields.items() if "float" in str(f.annotation)]
    assert set(DURATIONS) <= set(floats)
    for name in floats:
        with pytest.raises(ValidationError, match=name):
            Settings(**{name: "inf"})


def test_serve_says_so_in_one_line(tmp_path: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "chatlog", "serve", "--port", "0"],
                          env={"CHATLOG_START_TIMEOUT": "inf", "PATH": "/usr/bin:/bin",
                               "CHATLOG_DATA_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "start_timeout" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
