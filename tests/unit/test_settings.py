from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rollguard.db import normalize_url
from rollguard.settings import Settings


def test_embedded_default_lives_under_home(tmp_path: Path, monkeypatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "ROLLGUARD_DATABASE_URL", "ROLLGUARD_OPTUNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(home=tmp_path / "h")
    assert s.monitoring_db_url == f"sqlite:///{tmp_path / 'h' / 'monitoring.db'}"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert s.optuna_url.startswith("sqlite:///")
    assert s.landing_dir == tmp_path / "h" / "landing"
    assert not (tmp_path / "h").exists(), "constructing settings must not create folders"


def test_environment_prefix_and_mlflow_variable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    monkeypatch.setenv("ROLLGUARD_DATABASE_URL", "postgresql://u@db:5432/monitoring")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = Settings()
    assert s.home == tmp_path
    assert s.monitoring_db_url == "postgresql://u@db:5432/monitoring"
    assert s.tracking_uri == "http://mlflow:5000"


def test_bare_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_placeholder_token_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(env="production", admin_token="changeme")
    assert Settings(env="development", admin_token="changeme").admin_token is not None


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"ROLLGUARD_{name.upper()}" not in doc]
    assert missing == []


def test_artifact_root_keeps_uris_and_resolves_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(home=tmp_path).mlflow_artifact_root == tmp_path / "mlartifacts"
    monkeypatch.setenv("ROLLGUARD_MLFLOW_ARTIFACT_ROOT", "s3://bucket/rollguard/mlflow")
    assert Settings(home=tmp_path).mlflow_artifact_root == "s3://bucket/rollguard/mlflow"
    monkeypatch.setenv("ROLLGUARD_MLFLOW_ARTIFACT_ROOT", "artifacts")
    assert Settings(home=tmp_path).mlflow_artifact_root == tmp_path / "artifacts"


@pytest.mark.parametrize("root", ["s3:/bucket/prefix", "s3://", "gs:///prefix"])
def test_artifact_root_without_a_bucket_is_refused(root: str, monkeypatch) -> None:
    monkeypatch.setenv("ROLLGUARD_MLFLOW_ARTIFACT_ROOT", root)
    with pytest.raises(ValidationError, match="names no bucket"):
        Settings()


def test_aliased_setting_errors_name_the_variable_once(monkeypatch) -> None:
    from rollguard.errors import describe_validation_error

    monkeypatch.setenv("ROLLGUARD_MLFLOW_ARTIFACT_ROOT", "s3://")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_validation_error(caught.value, "ROLLGUARD_").startswith(
        "ROLLGUARD_MLFLOW_ARTIFACT_ROOT: "
    )
