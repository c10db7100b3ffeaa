"""Training against a real MLflow tracking server: lineage, signature, SHAP artifacts, the challenger
alias, idempotence, and parameter reuse from the champion."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow.artifacts
import mlflow.xgboost
import pytest
import xgboost
from mlflow import MlflowClient

from pipeline.retrain import TrainingInputs, retrain
from pipeline.tracking import TRAINING_KEY_TAG, version_signature
from pipeline.tuning import load_stored_params
from rollguard.settings import Settings
from rollguard.weeks import iso_week_label
from usecases.cdnow.source import load_dataset


@pytest.fixture(scope="module")
def inputs() -> TrainingInputs:
    tx, _, _ = load_dataset()
    weeks = sorted({iso_week_label(d.date()) for d in tx["date"]})
    batches = {f"batch-{w}": (w, f"{i:064x}") for i, w in enumerate(weeks)}
    return TrainingInputs(tx, weeks, batches)


@pytest.fixture
def fast_settings(tmp_path: Path, mlflow_server: str, request) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=tmp_path,
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"cdnow-{request.node.name[:40]}",
        training_cutoffs=2,
        tuning_trials=3,
        num_boost_round=30,
        early_stopping_rounds=5,
        shap_sample_rows=300,
    )


def test_training_registers_a_traceable_challenger_once(
    fast_settings, inputs, mlflow_server, tmp_path, caplog
):
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    first = retrain(fast_settings, inputs=inputs, client=client)
    assert first.created and first.version == "1"
    assert (first.decision.action, first.decision.reason) == ("tune", "no_stored_params")
    assert first.tuning is not None and first.tuning.n_complete + first.tuning.n_pruned == 3

    name = fast_settings.model_name
    mv = client.get_model_version_by_alias(name, "challenger")
    assert mv.version == "1"
    assert mv.tags["rollguard.status"] == "candidate"
    assert mv.tags[TRAINING_KEY_TAG] == first.training_key
    for tag in (
        "rollguard.code_version",
        "rollguard.dataset_sha256",
        "rollguard.cutoff.evaluation",
        "rollguard.cutoff.fit",
        "rollguard.batches.sha256",
        "rollguard.optuna.study",
        "rollguard.optuna.trial",
        "rollguard.tuning.reason",
    ):
        assert mv.tags[tag], tag
    assert mv.tags["rollguard.batches.count"] == str(len(inputs.batches))  # up to 1998-W27
    # MLflow can drop a signature silently: check the one the registry serves.
    signature = version_signature(name, "1", tracking_uri=mlflow_server)
    assert signature is not None
    assert [c.name for c in signature.inputs.inputs][:2] == ["recency_days", "tenure_days"]
    # The model requires the XGBoost build that trained it (the CPU-only distribution), and
    # MLflow's xgboost flavor loads it without a dependency-mismatch warning.
    folder = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/1", dst_path=str(tmp_path), tracking_uri=mlflow_server
        )
    )
    requirements = (folder / "requirements.txt").read_text().split()
    assert f"xgboost-cpu=={xgboost.__version__}" in requirements
    assert not [r for r in requirements if r.startswith("xgboost=")]
    with caplog.at_level(logging.WARNING, logger="mlflow"):
        loaded = mlflow.xgboost.load_model(str(folder))
    assert "mismatch" not in caplog.text
    assert loaded.num_features() == len(signature.inputs.inputs)

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rollguard.shap.status"] == "ok"
    for metric in (
        "eval_average_precision",
        "eval_roc_auc",
        "eval_log_loss",
        "eval_brier_score",
        "eval_lift_at_budget",
        "eval_revenue_share_at_budget",
        "shap_mean_abs_recency_days",
    ):
        assert metric in run.data.metrics, metric
    assert run.data.params["xgb.tree_method"] == "hist"
    shap_files = {f.path for f in client.list_artifacts(first.run_id, "shap")}
    assert shap_files == {"shap/shap_summary.png", "shap/shap_mean_abs.csv", "shap/shap_local.json"}

    # Same data, same code: the second call finds version 1 and trains nothing.
    second = retrain(fast_settings, inputs=inputs, client=client)
    assert (second.created, second.version, second.run_id) == (False, "1", first.run_id)
    assert second.training_key == first.training_key
    assert second.decision.action == "reuse"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_reuse_reads_the_champions_params(fast_settings, inputs, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    first = retrain(fast_settings, inputs=inputs, client=client, mode="tune")
    name = fast_settings.model_name
    assert load_stored_params(name, client=client).source == "latest_version"
    client.set_registered_model_alias(name, "champion", first.version)
    stored = load_stored_params(name, client=client)
    assert stored is not None and stored.source == "champion"
    assert dict(stored.params) == dict(first.tuning.params)
    # A degraded guard forces tuning; the study is persistent, so the same params come back and
    # the run is recognised as already registered.
    again = retrain(fast_settings, inputs=inputs, client=client, guard_degraded=True)
    assert again.decision.reason == "guard_degraded"
    assert (again.created, again.version) == (False, first.version)
