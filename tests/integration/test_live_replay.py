"""``rollguard data replay --live``: one weekly file per interval, stopped by --weeks, Ctrl-C or
SIGTERM, each time cleanly (exit 0, a summary, no half-written file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.servers import venv_bin


def _run(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [venv_bin("rollguard"), "data", "replay", "--live", *args, "--json"],
        env={**os.environ, "ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _landed(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "landing").glob("cdnow_*.csv"))


def test_live_replay_delivers_one_week_per_interval_and_stops_after_weeks(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--every", "200ms", "--weeks", "3")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["delivered"] == ["1997-W01", "1997-W02", "1997-W03"]
    assert summary["stopped_by_signal"] is False
    assert _landed(tmp_path) == [f"cdnow_1997-W0{i}.csv" for i in (1, 2, 3)]
    assert err.count("delivered ") == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_live_replay_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _run(tmp_path, "--every", "1h")
    deadline = time.monotonic() + 300  # readiness wait for the first delivery
    while not _landed(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert _landed(tmp_path) == ["cdnow_1997-W01.csv"]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out) == {
        "delivered": ["1997-W01"],
        "stopped_by_signal": True,
        "landing_dir": str(tmp_path / "landing"),
    }
    assert not list((tmp_path / "landing").glob("*.tmp*"))


def test_live_replay_refuses_a_bad_interval(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--every", "soon")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert json.loads(out)["kind"] == "invalid_input"
