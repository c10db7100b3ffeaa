"""DAG tests run Airflow in subprocesses with an embedded home of their own: Airflow fixes its
configuration at first import, and one pytest process hosts many homes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_python(
    code: str, home: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> dict:
    """Run ``code`` in a fresh interpreter with ROLLGUARD_HOME=home; it must print one JSON line
    last. Returns that document; fails the test with the output otherwise."""
    full_env = {**os.environ, "ROLLGUARD_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    for key in [k for k in full_env if k.startswith("AIRFLOW")]:
        full_env.pop(key)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1])
