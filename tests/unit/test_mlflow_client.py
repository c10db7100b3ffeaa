"""The one function that creates MLflow experiments: artifacts under the configured root, never
relative to the working directory; URI roots kept as strings; a tracking server chooses its own."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rollguard.mlflow_client import artifact_location, ensure_experiment, mlflow_client
from rollguard.settings import Settings


def test_artifact_location_by_root_and_tracking_uri(tmp_path: Path) -> None:
    local = tmp_path / "home" / "mlartifacts"
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert artifact_location(local, sqlite) == local.resolve().as_uri()
    assert artifact_location(str(local), "postgresql://u@db/mlflow") == local.resolve().as_uri()
    # A URI root stays a string with any backend (Path would fold s3:// into s3:/).
    for root in ("s3://bucket/rollguard/artifacts", "gs://b/p", "mlflow-artifacts:/x"):
        assert artifact_location(root, sqlite) == root
        assert artifact_location(root, "http://mlflow:5000") == root
    # A tracking server owns its artifact store: a local folder of the client means nothing there.
    assert artifact_location(local, "http://127.0.0.1:5000") is None
    assert artifact_location(local, "https://mlflow.example") is None


def test_experiments_land_under_the_home_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # The embedded default: an MLFLOW_TRACKING_URI left in this process by an earlier test's
    # module fixture (mlflow.set_tracking_uri exports it) would point the settings at a server.
    for name in [k for k in os.environ if k.startswith(("ROLLGUARD_", "MLFLOW_"))]:
        monkeypatch.delenv(name)
    settings = Settings(home=tmp_path / "home", env="test", _env_file=None)  # type: ignore[call-arg]
    client = mlflow_client(settings)
    root = settings.mlflow_artifact_root
    first = ensure_experiment(client, "rollguard-monitoring", artifact_root=root)
    assert ensure_experiment(client, "rollguard-monitoring", artifact_root=root) == first
    experiment = client.get_experiment(first)
    assert experiment.artifact_location == root.resolve().as_uri()
    run = client.create_run(first)
    report = tmp_path / "report.json"
    report.write_text("{}")
    client.log_artifact(run.info.run_id, str(report), artifact_path="monitoring")
    assert (root / run.info.run_id / "artifacts" / "monitoring" / "report.json").exists()
    s3 = ensure_experiment(client, "remote", artifact_root="s3://bucket/prefix")
    assert client.get_experiment(s3).artifact_location == "s3://bucket/prefix"
    assert list(cwd.iterdir()) == []

    # An experiment created elsewhere (as before this function existed) is kept, with a warning.
    old = client.create_experiment("old", artifact_location=(tmp_path / "mlruns").as_uri())
    with caplog.at_level(logging.WARNING, logger="rollguard.mlflow_client"):
        assert ensure_experiment(client, "old", artifact_root=root) == old
    assert "outside the artifact root" in caplog.text and "'old'" in caplog.text


def test_configured_identity_sets_mlflows_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rollguard.mlflow_client import apply_mlflow_credentials, mlflow_credentials

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert mlflow_credentials(Settings(home=tmp_path)) is None
    assert apply_mlflow_credentials(Settings(home=tmp_path)) is None
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ, "no identity: environment untouched"
    settings = Settings(home=tmp_path, mlflow_username="reader", mlflow_password_file=secret)
    assert apply_mlflow_credentials(settings) == "reader"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "reader"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


def test_gate_and_guard_tasks_switch_identity_only_when_configured(tmp_path: Path) -> None:
    gate, guard = tmp_path / "gate", tmp_path / "guard"
    base = Settings(
        home=tmp_path,
        mlflow_username="pipeline",
        mlflow_password_file=tmp_path / "pipeline",
        mlflow_gate_password_file=gate,
    )
    as_gate = base.as_mlflow_user("gate")
    assert (as_gate.mlflow_username, as_gate.mlflow_password_file) == ("gate", gate)
    assert base.mlflow_username == "pipeline", "the original settings are unchanged"
    # No guard password file: the guard task keeps the process's identity.
    assert base.as_mlflow_user("guard").mlflow_username == "pipeline"
    # No identity at all (embedded default): nothing to switch.
    unauth = Settings(
        home=tmp_path, mlflow_gate_password_file=gate, mlflow_guard_password_file=guard
    )
    assert unauth.as_mlflow_user("gate").mlflow_username is None
    with pytest.raises(ValueError, match="gate or guard"):
        base.as_mlflow_user("pipeline")


def test_s3_root_without_boto3_is_refused_in_rollguards_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An s3:// root in an environment without boto3 (the api and ui images) fails when the
    experiment is made, naming the root and the fix, not later inside MLflow's upload."""
    import sys

    from rollguard.mlflow_client import ArtifactStoreError, check_artifact_client

    check_artifact_client("s3://bucket/prefix")  # boto3 is in the dev group
    check_artifact_client(None)
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    check_artifact_client((tmp_path / "a").as_uri())
    settings = Settings(home=tmp_path, artifact_root="s3://bucket/prefix")
    client = mlflow_client(settings)
    with pytest.raises(ArtifactStoreError, match=r"s3://bucket/prefix .*boto3"):
        ensure_experiment(client, "s3-exp", artifact_root=settings.mlflow_artifact_root)
    assert client.get_experiment_by_name("s3-exp") is None
