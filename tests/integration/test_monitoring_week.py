"""The monitor step on a short real CDNOW replay, a real MLflow tracking server and the monitoring
store on SQLite: drift, score drift, quality and KPI rows land in ``monitoring_results``, the HTML
reports in the reports folder and one MLflow run per week; ``rollguard monitor`` recomputes a
week and prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from domain.scoring import score_batch
from domain.warehouse import load_records
from monitoring.results import week_rows
from pipeline.steps import monitor_step, scoring_cutoff
from registry_guard import registry
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.integration.test_guard_rollback import evaluation_cutoff, gate, ingest, train_version

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path, mlflow_server: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=tmp_path / "home",
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"monitor-{uuid.uuid4().hex[:10]}",
        monitor_sample_rows=5000,
    )


@pytest.fixture
def engine(settings: Settings) -> Engine:
    eng = open_store(settings)
    yield eng
    eng.dispose()


def score(settings: Settings, engine: Engine, client: Any, version: str) -> date:
    """The DAG's batch scoring of ``version`` at the scoring cutoff (after the newest week)."""
    cutoff = scoring_cutoff(settings)
    assert cutoff is not None
    features = settings.usecase_spec.build_rows(
        load_records(settings, engine=engine), cutoff, label_available=False
    )
    model = registry.load_version(client, settings.model_name, version)
    score_batch(settings, cutoff, model_version=version, predict=model.predict, features=features)
    return cutoff


def rows_by_key(engine: Engine, settings: Settings, week: date) -> dict[tuple[str, str, str], Any]:
    return {
        (r["kind"], r["metric"], r["feature"]): r
        for r in week_rows(engine, settings.model_name, week.isoformat())
    }


def test_monitor_step_on_a_real_replay(settings: Settings, engine: Engine) -> None:
    client = mlflow_client(settings)
    ingest(settings, engine, 20)
    version = train_version(settings, engine, client)
    evaluation = evaluation_cutoff(settings, engine)
    fit = [evaluation - timedelta(weeks=4 + k) for k in range(4)]
    name = settings.model_name
    client.set_model_version_tag(
        name, version, "rollguard.cutoff.fit", ",".join(c.isoformat() for c in fit)
    )
    run_id = client.get_model_version(name, version).run_id
    client.log_metric(run_id, "eval_average_precision", 0.55)
    client.log_metric(run_id, "eval_roc_auc", 0.99)  # far above what the model reaches
    assert gate(settings, engine, client, version).decision.outcome == "bootstrap"
    first = score(settings, engine, client, version)
    ingest(settings, engine, 4)  # the first scored week's label matures
    second = score(settings, engine, client, version)
    assert second - first == timedelta(days=settings.horizon_days)

    out = monitor_step(settings, {"cutoff": second.isoformat()})
    assert out["model_version"] == version and out["matured_cutoff"] == first.isoformat()
    assert 0.0 <= out["drift_share"] <= 1.0 and out["psi"] >= 0.0
    assert 0.0 <= out["retrain_drift_share"] <= 1.0
    assert out["retrain_drift_exceeded"] == (
        out["retrain_drift_share"] > settings.retrain_drift_threshold
    )
    assert out["outcomes"]["quality_state"] == "degraded"
    json.dumps(out)  # XCom-ready

    now = rows_by_key(engine, settings, second)
    assert now[("data_drift", "n_features", "")]["value"] == 18
    share = now[("data_drift", "drift_share", "")]
    assert share["state"] in ("ok", "drift") and share["value"] == out["drift_share"]
    # The reference (4 fit cutoffs, > 40,000 rows) and the week were sampled to the cap.
    assert share["sample_size"] == 5000 and share["reference_size"] == 5000
    assert now[("run", "reference_rows", "")]["value"] > 40_000
    assert now[("run", "sample_cap", "")]["value"] == 5000
    assert now[("run", "retrain_drift_share", "")]["value"] == out["retrain_drift_share"]
    assert now[("data_drift", "drift_score", "recency_days")]["state"] in ("ok", "drift")
    assert now[("data_drift", "drifted", "recency_days")]["value"] in (0.0, 1.0)
    assert now[("score_drift", "psi", "")]["value"] == pytest.approx(out["psi"])
    assert now[("score_drift", "drift_score", "")]["state"] in ("ok", "drift")
    assert (
        0
        < now[("score_drift", "score_p50", "")]["value"]
        <= now[("score_drift", "score_p99", "")]["value"]
        < 1
    )
    assert now[("quality", "average_precision", "")]["state"] == "pending"
    assert now[("kpi", "lift", "")]["state"] == "pending"
    assert all(r["model_version"] == version for r in now.values())

    matured = rows_by_key(engine, settings, first)
    assert not any(k[0] == "data_drift" for k in matured)  # drift of that week was not asked
    ap = matured[("quality", "average_precision", "")]
    assert ap["state"] == "ok" and 0 < ap["value"] < 1 and ap["sample_size"] > 2000
    assert matured[("quality", "expected_average_precision", "")]["value"] == 0.55
    auc = matured[("quality", "roc_auc", "")]["value"]
    low = matured[("quality", "roc_auc_ci_low", "")]["value"]
    high = matured[("quality", "roc_auc_ci_high", "")]["value"]
    assert low < auc < high
    assert matured[("quality", "expected_roc_auc", "")]["value"] == 0.99
    # The live ROC AUC interval lies below 0.99 - 0.02: degraded, with the interval in the detail.
    degraded = matured[("quality", "degraded", "")]
    assert (degraded["value"], degraded["state"]) == (1.0, "degraded")
    assert f"{high:.4f}" in degraded["detail"]
    kpi = {k[1]: r["value"] for k, r in matured.items() if k[0] == "kpi"}
    assert kpi["random_lift"] == 1.0 and kpi["lift"] > 1.0  # a real model beats random targeting
    assert kpi["lift"] == pytest.approx(kpi["targeted_positive_rate"] / kpi["base_rate"])
    assert kpi["targeted_value_share"] > kpi["random_value_share"]
    assert kpi["targeted_count"] == pytest.approx(0.1 * ap["sample_size"], abs=1)

    folder = settings.reports_dir / "monitoring" / name / second.isoformat()
    assert (folder / "data_drift.html").stat().st_size > 10_000
    assert (folder / "score_drift.html").exists()
    runs = client.search_runs(
        [client.get_experiment_by_name(settings.monitor_experiment).experiment_id],
        filter_string=f"tags.`rollguard.model_name` = '{name}'",
    )
    assert {r.data.tags["rollguard.week"] for r in runs} == {first.isoformat(), second.isoformat()}
    week_run = next(r for r in runs if r.data.tags["rollguard.week"] == second.isoformat())
    assert week_run.data.metrics["data_drift.drift_share"] == pytest.approx(out["drift_share"])
    artifacts = {a.path for a in client.list_artifacts(week_run.info.run_id, "monitoring")}
    assert "monitoring/data_drift.html" in artifacts

    # Recomputing the matured week through the CLI replaces its rows and prints them.
    env = {
        **os.environ,
        "ROLLGUARD_HOME": str(settings.home),
        "ROLLGUARD_ENV": "test",
        "ROLLGUARD_MODEL_NAME": name,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "ROLLGUARD_MONITOR_SAMPLE_ROWS": "5000",
    }
    cli = [str(Path(sys.executable).parent / "rollguard")]
    proc = subprocess.run(
        [*cli, "monitor", "--week", first.isoformat(), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    figures = {(f["kind"], f["metric"], f.get("feature", "")): f for f in printed["figures"]}
    assert figures[("quality", "average_precision", "")]["value"] == pytest.approx(ap["value"])
    assert ("data_drift", "drift_share", "") in figures
    again = rows_by_key(engine, settings, first)
    assert again[("kpi", "lift", "")]["value"] == pytest.approx(kpi["lift"])
    assert again[("data_drift", "n_features", "")]["value"] == 18

    bad = subprocess.run(
        [*cli, "monitor", "--week", "2031-W02", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2
    assert "not ingested" in json.loads(bad.stdout.strip().splitlines()[-1])["error"]
