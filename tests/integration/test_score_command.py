"""``rollguard score`` on a short real CDNOW replay, a real MLflow tracking server and the store on
SQLite: without a champion it names the steps to run; with one it writes the week's batch
predictions once per cutoff and version; ``rollguard monitor`` names ``rollguard score`` while a
week has no predictions, and shows score drift once it has (issue 17)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from domain.evaluation import stack_rows
from domain.warehouse import load_records
from monitoring.cli import human
from registry_guard import registry
from registry_guard.guard import EVALUATION_CUTOFF_TAG
from rollguard.cli import app
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings, get_settings
from rollguard.store import open_store
from tests.integration.test_guard_rollback import evaluation_cutoff, gate, ingest
from usecases.cdnow import USECASE
from usecases.cdnow.features import FEATURE_COLUMNS, LABEL

WEEKS = 20
WEEK = "1997-W21"  # the scoring cutoff after 20 ingested weeks: Monday 1997-05-19
CUTOFF = "1997-05-19"


@pytest.fixture
def settings(tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    name = f"score-{uuid.uuid4().hex[:10]}"
    home = tmp_path / "home"
    for key, value in {
        "ROLLGUARD_HOME": str(home),
        "ROLLGUARD_ENV": "test",
        "ROLLGUARD_MODEL_NAME": name,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ROLLGUARD_MONITOR_SAMPLE_ROWS": "2000",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return Settings(  # type: ignore[call-arg]
        home=home,
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=name,
        monitor_sample_rows=2000,
    )


@pytest.fixture
def engine(settings: Settings) -> Engine:
    eng = open_store(settings)
    yield eng
    eng.dispose()


def register_candidate(settings: Settings, engine: Engine, client: Any) -> str:
    """A small real XGBoost model on four fit cutoffs of the warehouse, registered as a candidate
    tagged with its fit and evaluation cutoffs (like ``test_guard_rollback.train_version``, with
    the pip requirements given so that MLflow does not infer them: that takes half a minute)."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    evaluation = evaluation_cutoff(settings, engine)
    cutoffs = [evaluation - timedelta(weeks=4 + k) for k in range(4)]
    rows = stack_rows(USECASE, load_records(settings, engine=engine), cutoffs)
    x = rows.loc[:, list(FEATURE_COLUMNS)].astype("float64")
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 2, "seed": 1},
        xgb.DMatrix(x, label=rows[LABEL].to_numpy(dtype=np.int64)),
        num_boost_round=40,
    )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment("rollguard-score-tests")
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(x.head(), booster.predict(xgb.DMatrix(x.head()))),
            model_format="ubj",
            pip_requirements=["xgboost"],
        )
    client.create_registered_model(settings.model_name)
    version = client.create_model_version(
        settings.model_name,
        source=info.model_uri,
        run_id=run.info.run_id,
        model_id=info.model_id,
        tags={
            registry.STATUS_TAG: "candidate",
            EVALUATION_CUTOFF_TAG: evaluation.isoformat(),
            "rollguard.cutoff.fit": ",".join(c.isoformat() for c in cutoffs),
        },
    )
    return str(version.version)


def run(*args: str) -> tuple[int, dict[str, Any]]:
    """``rollguard ARGS --json`` in process: exit code and the printed JSON document."""
    result = CliRunner().invoke(app, [*args, "--json"])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def test_score_a_week_by_hand_and_monitor_names_the_missing_step(
    settings: Settings, engine: Engine
) -> None:
    ingest(settings, engine, WEEKS)

    # No champion: nothing can score; the error names the steps that are missing.
    code, error = run("score")
    assert code == 2 and error["kind"] == "registry"
    assert "`rollguard train`" in error["error"] and "`rollguard gate`" in error["error"]
    assert WEEK in error["error"]

    client = mlflow_client(settings)
    version = register_candidate(settings, engine, client)
    assert gate(settings, engine, client, version).decision.outcome == "bootstrap"

    # A champion, but the week was never scored: monitor says which step is missing.
    code, before = run("monitor", "--week", WEEK)
    assert code == 0, before
    (step,) = before["missing_steps"]
    assert f"no batch predictions for cutoff {CUTOFF}" in step
    assert f"`rollguard score --week {WEEK}`" in step
    assert f"missing step: {step}" in human(before)
    psi = next(f for f in before["figures"] if (f["kind"], f["metric"]) == ("score_drift", "psi"))
    assert "value" not in psi

    # The week scored by hand (the default week is the scoring cutoff), once per version.
    code, scored = run("score")
    assert code == 0, scored
    assert (scored["week"], scored["cutoff"], scored["model_version"]) == (WEEK, CUTOFF, version)
    assert scored["created"] is True and scored["n_rows"] == 23_570
    assert scored["n_targeted"] == 2_357
    frame = pd.read_parquet(scored["predictions"])
    assert len(frame) == 23_570 and frame["targeted"].sum() == 2_357
    assert Path(scored["snapshot"]).name == f"cutoff={CUTOFF}.parquet"
    code, again = run("score", "--week", CUTOFF)
    assert code == 0 and again["created"] is False and again["predictions"] == scored["predictions"]

    # Now score drift has a value; what is left is the label that has not matured.
    code, after = run("monitor", "--week", WEEK)
    assert code == 0, after
    psi = next(f for f in after["figures"] if (f["kind"], f["metric"]) == ("score_drift", "psi"))
    assert psi["value"] >= 0.0
    (pending,) = after["missing_steps"]
    assert "pending until its label matures" in pending
    assert "1997-W21 .. 1997-W24" in pending and "--until 1997-06-15" in pending


def test_score_refuses_a_week_whose_previous_week_is_not_ingested(
    settings: Settings, engine: Engine
) -> None:
    ingest(settings, engine, 2)
    code, error = run("score", "--week", "1997-W10")
    assert code == 2 and error["kind"] == "configuration"
    assert "need week 1997-W09 ingested (newest ingested: 1997-W02)" in error["error"]
    assert "`rollguard data ingest`" in error["error"]
