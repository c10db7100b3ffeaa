"""Everything the main commands write goes under ROLLGUARD_HOME, whatever the working directory.

The commands run as real subprocesses (the ``rollguard`` entry point of this environment) from an
empty scratch working directory, with the embedded default (SQLite MLflow backend, SQLite store)
under a home elsewhere: a short CDNOW replay, ingestion, a feature snapshot, a quick training run,
the gate (bootstrap: the first champion), the guard check and the monitor step of one week. After
each command the working directory must still be empty, and every MLflow experiment must keep its
artifacts under the home's artifact root (``settings.mlflow_artifact_root``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: Settings that make one training run take seconds, not minutes (as tests/integration/test_tracking.py).
FAST = {
    "ROLLGUARD_TRAINING_CUTOFFS": "2",
    "ROLLGUARD_TUNING_TRIALS": "2",
    "ROLLGUARD_NUM_BOOST_ROUND": "30",
    "ROLLGUARD_EARLY_STOPPING_ROUNDS": "5",
    "ROLLGUARD_SHAP_SAMPLE_ROWS": "300",
    "ROLLGUARD_MONITOR_SAMPLE_ROWS": "3000",
}
#: The commands, in order; the monitored week is the cutoff after the newest ingested week.
COMMANDS = (
    ("data", "replay", "--until", "1997-05-31", "--json"),
    ("data", "ingest", "--json"),
    ("features", "build", "--cutoff", "1997-05-26", "--json"),
    ("train", "--json"),
    ("gate", "--json"),
    ("guard-check", "--json"),
    ("models", "--json"),
    ("monitor", "--week", "1997-05-26", "--json"),
)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_main_commands_write_nothing_into_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    # The embedded default: no tracking server, no store URL; nothing inherited from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLGUARD_", "MLFLOW_"))}
    env |= {"ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test", **FAST}
    cli = str(Path(sys.executable).parent / "rollguard")
    timings = {}
    for args in COMMANDS:
        started = time.monotonic()
        proc = subprocess.run(
            [cli, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )
        timings[" ".join(args[:2])] = round(time.monotonic() - started, 1)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
        json.loads(proc.stdout)  # stdout is the one JSON document
        written = _listing(cwd)
        assert not written, (
            f"`rollguard {' '.join(args)}` wrote into the working directory: {written[:20]}"
        )
    print("seconds per command:", timings)

    from mlflow import MlflowClient

    from rollguard.settings import Settings

    # Read the home as the commands did: an MLFLOW_TRACKING_URI left in this process by an earlier
    # test's module fixture (mlflow.set_tracking_uri exports it) must not redirect the check.
    for name in [k for k in os.environ if k.startswith(("ROLLGUARD_", "MLFLOW_"))]:
        monkeypatch.delenv(name)
    settings = Settings(home=home, env="test", _env_file=None)  # type: ignore[call-arg]
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    root = Path(settings.mlflow_artifact_root).resolve().as_uri()
    experiments = {e.name: e.artifact_location for e in client.search_experiments()}
    assert {"rollguard-training", settings.monitor_experiment} <= set(experiments)
    for name, location in experiments.items():
        if name != "Default":  # MLflow's own, created with the database and never used here
            assert location.startswith(root), (name, location)
    monitoring = client.get_experiment_by_name(settings.monitor_experiment)
    (run,) = client.search_runs([monitoring.experiment_id])
    assert run.info.artifact_uri.startswith(root)
    assert "monitoring/data_drift.html" in {
        a.path for a in client.list_artifacts(run.info.run_id, "monitoring")
    }
