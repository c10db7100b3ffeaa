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


#: Prefixes of variables a DAG subprocess must not inherit from the pytest process: an earlier
#: test's MLflow server (``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, and a
#: module-scoped fixture's value outlives the per-test restore), its Rollguard settings or Airflow's.
INHERITED_PREFIXES = ("AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "ROLLGUARD_")


def clean_environment(overrides: dict[str, str]) -> dict[str, str]:
    """``os.environ`` without :data:`INHERITED_PREFIXES` variables, then ``overrides``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)}
    return {**base, **overrides}


def run_python(
    code: str, home: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> dict:
    """Run ``code`` in a fresh interpreter with ROLLGUARD_HOME=home; it must print one JSON line
    last. Returns that document; fails the test with the output otherwise."""
    full_env = clean_environment(
        {"ROLLGUARD_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    )
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
