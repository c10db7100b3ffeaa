"""The model server refuses to run as several worker processes, however it is launched: one
line on stderr, exit code 2, and no worker left serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess, free_port, venv_bin

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ROLLGUARD_HOME": str(home),
        "ROLLGUARD_ENV": "test",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        **extra,
    }


@pytest.mark.parametrize("workers_flag", ["--workers=2", "--workers 3"])
def test_uvicorn_with_several_workers_is_refused(tmp_path: Path, workers_flag: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", *workers_flag.split(), "--factory",
            "api.app:create_app", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.run(
        argv, env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert refusals, proc.stderr[-3000:]
    assert all("one process per replica" in line for line in refusals)
    # No worker is restarted: the supervisor stopped, so nothing listens any more.
    assert "Child process" not in proc.stderr or "died" not in proc.stderr, proc.stderr[-3000:]


def test_serve_api_with_web_concurrency_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [venv_bin("rollguard"), "serve", "api", "--port", str(free_port())],
        env=_env(tmp_path, WEB_CONCURRENCY="2"), cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_uvicorn_with_one_worker_starts(tmp_path: Path) -> None:
    """The check refuses several workers only: ``--reload``-less single worker serves."""
    port = free_port()
    server = ServerProcess(
        "api-one-worker",
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app",
         "--host", "127.0.0.1", "--port", str(port)],
        port=port, ready_path="/healthz", log_dir=tmp_path, env=_env(tmp_path), cwd=ROOT,
    ).start(timeout=180)  # fmt: skip
    server.stop()
