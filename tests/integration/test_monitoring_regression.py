"""The monitor step on a regression use case (the test fixture of
tests/support/regression_usecase.py), a real MLflow tracking server and the monitoring store on
SQLite: drift on numeric and categorical features, MAE with its bootstrap interval, ``inconclusive``
on a small week, KPIs in EUR beside the declared baseline and the training median, and every store
query of the use case's dashboards returning values."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from monitoring.results import week_rows
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store


def rows_by_key(engine: Engine, settings: Settings, week: date) -> dict[tuple[str, str, str], Any]:
    return {
        (r["kind"], r["metric"], r["feature"]): r
        for r in week_rows(engine, settings.model_name, week.isoformat())
    }


# --- a regression use case (the test fixture of tests/support/regression_usecase.py) -----------------
class _TruthPlusNoise:
    """A stand-in model of the fixture: the noiseless rate plus a fixed error per row (EUR)."""

    def __init__(self, sd: float, seed: int) -> None:
        self.sd, self.seed = sd, seed

    def predict(self, frame: Any) -> Any:
        import numpy as np

        from tests.support.regression_usecase import true_rate

        noise = np.random.default_rng(self.seed).normal(0, self.sd, len(frame))
        return true_rate(frame) + noise


def _toy_warehouse(settings: Settings, engine: Engine, records: Any, weeks: list[str]) -> None:
    """Ledger rows of accepted weeks (the warehouse's index); the records themselves are handed
    to the inputs: the fixture is not a registered use case, and the warehouse reader reads the
    configured one's files."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from rollguard.db.models import IngestionDecision

    rows = [
        dict(batch_id=f"b{i}", file_name=f"toyrates_{w}.csv", content_sha256=f"{i:064d}",
             size_bytes=1, week=w, status="accepted", n_rows=1, warehouse_path="unused",
             decided_at=datetime.now(UTC))
        for i, w in enumerate(weeks)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(IngestionDecision), rows)


def test_monitor_step_on_a_regression_use_case(tmp_path: Path, mlflow_server: str) -> None:
    """Drift on numeric and categorical features, MAE with its interval, ``inconclusive`` on a
    small week, KPIs in EUR beside the declared baseline and the training median, all kept in the
    store and a real MLflow run."""
    import numpy as np
    import pandas as pd

    from domain.scoring import predictions_path
    from monitoring.compute import LiveQualityRule
    from monitoring.weekly import Inputs
    from monitoring.weekly import monitor_step as monitor_week_step
    from rollguard.weeks import iso_week_label
    from tests.support.regression_usecase import USECASE as TOY
    from tests.support.regression_usecase import make_records

    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path / "home",
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"toy-{uuid.uuid4().hex[:10]}",
        monitor_sample_rows=5000,
    )
    engine = open_store(settings)
    client = mlflow_client(settings)
    first = date(2024, 1, 1)
    records = pd.concat(
        [
            make_records(6, 200, seed=1, first=first),
            # the newest week: the segment mix and lead times moved
            make_records(1, 200, seed=2, first=first + timedelta(weeks=6), shift=True).assign(
                booking_id=lambda f: f["booking_id"] + 10_000
            ),
        ],
        ignore_index=True,
    )
    cutoffs = [first + timedelta(weeks=k + 1) for k in range(7)]
    _toy_warehouse(settings, engine, records, [iso_week_label(c - timedelta(7)) for c in cutoffs])
    name = settings.model_name
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(f"train-{name}"))
    source = f"runs:/{run.info.run_id}/model"  # no artifact needed: the loader is passed in
    version = client.create_model_version(name, source, run.info.run_id).version
    fit, evaluation, scored = cutoffs[:4], cutoffs[4], cutoffs[6]
    tags = {
        "rollguard.cutoff.fit": ",".join(c.isoformat() for c in fit),
        "rollguard.cutoff.evaluation": evaluation.isoformat(),
        "baseline.training_median": "100.0",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    model = _TruthPlusNoise(sd=10.0, seed=3)
    # The gate-time figures: the model on the evaluation cutoff's rows (what training logs).
    gate_rows = TOY.build_rows(records, evaluation, label_available=True)
    gate_error = model.predict(TOY.feature_frame(gate_rows)) - gate_rows["rate"].to_numpy()
    gate_mae = float(np.mean(np.abs(gate_error)))
    for metric, value in (
        ("eval_mae", gate_mae),
        ("eval_rmse", float(np.sqrt(np.mean(gate_error**2)))),
        ("eval_bias", float(np.mean(gate_error))),
    ):
        client.log_metric(run.info.run_id, metric, value)
    week = TOY.build_rows(records, scored, label_available=True)
    scores = model.predict(TOY.feature_frame(week))
    path = predictions_path(settings, scored, version)
    path.parent.mkdir(parents=True)
    pd.DataFrame(
        {"booking_id": week["booking_id"], "score": scores, "rank": 1, "targeted": True}
    ).to_parquet(path, index=False)

    def inputs(min_rows: int) -> Inputs:
        rule = LiveQualityRule(min_rows=min_rows, relative_margin=0.05, seed=5)
        found = Inputs(settings, client, engine, rule, lambda v: model, spec=TOY)
        found._records = records
        return found

    out = monitor_week_step(settings, {"cutoff": scored.isoformat()}, inputs=inputs(500))
    assert out["matured_cutoff"] == scored.isoformat()  # label known at once: same week
    assert set(out["drifted"]) >= {"segment", "lead_days"}
    assert out["retrain_drift_exceeded"] == (
        out["retrain_drift_share"] > settings.retrain_drift_threshold
    )
    assert out["outcomes"]["quality_state"] == "inconclusive"  # 200 rows < 500
    got = rows_by_key(engine, settings, scored)
    assert got[("data_drift", "drifted", "segment")]["value"] == 1.0
    # 800 reference rows (<= 1,000): Evidently's small-sample test of a categorical column
    assert "chi-square" in got[("data_drift", "drift_score", "segment")]["detail"]
    assert got[("data_drift", "drifted", "meal")]["value"] == 0.0
    mae = got[("quality", "mae", "")]
    assert mae["value"] == pytest.approx(np.mean(np.abs(scores - week["rate"])))
    assert mae["sample_size"] == 200
    verdict = got[("quality", "degraded", "")]
    assert (verdict["state"], verdict["value"]) == ("inconclusive", None)
    assert got[("kpi", "baseline_mae", "training_median")]["value"] == pytest.approx(
        np.mean(np.abs(100.0 - week["rate"]))
    )
    last = week["last_rate"].notna()
    assert got[("kpi", "baseline_mae", "last_rate")]["value"] == pytest.approx(
        np.mean(np.abs(week.loc[last, "last_rate"] - week.loc[last, "rate"]))
    )
    assert got[("kpi", "mae", "")]["value"] < got[("kpi", "baseline_mae", "last_rate")]["value"]
    # With a lower minimum the same week gets a verdict: the same model as at gate time is ok.
    monitor_week_step(settings, {"cutoff": scored.isoformat()}, inputs=inputs(100))
    again = rows_by_key(engine, settings, scored)
    low, high = again[("quality", "mae_ci_low", "")]["value"], again[("quality", "mae_ci_high", "")]["value"]  # fmt: skip
    assert low < mae["value"] < high
    assert again[("quality", "expected_mae", "")]["value"] == pytest.approx(gate_mae)
    assert again[("quality", "degraded", "")]["state"] == "ok"
    # Had the gate promised a much smaller error, the interval would lie above it: degraded.
    client.log_metric(run.info.run_id, "eval_mae", 0.6 * gate_mae)
    monitor_week_step(settings, {"cutoff": scored.isoformat()}, inputs=inputs(100))
    verdict = rows_by_key(engine, settings, scored)[("quality", "degraded", "")]
    assert (verdict["state"], verdict["value"]) == ("degraded", 1.0)
    check_dashboard_sql(engine, name, TOY)
    engine.dispose()


def check_dashboard_sql(engine: Engine, model_name: str, usecase: Any) -> None:
    """Every SQL query of the use case's dashboards that reads ``monitoring_results`` returns rows,
    and every column holds a value at least once (a misspelt metric would give a NULL column).
    The registry tables (alias audit, gate decisions, guard checks) stay empty in this test."""
    import json as _json

    from grafana.dashboards_src import PER_USECASE, render_usecase
    from grafana.dashboards_src.inventory import queries
    from tests.support.grafana_queries import expand_sql, variable_kinds

    checked = 0
    for build in PER_USECASE.values():
        doc = _json.loads(render_usecase(build, usecase))
        multi = variable_kinds(doc)
        with engine.connect() as conn:
            features = conn.exec_driver_sql(
                "SELECT DISTINCT feature FROM monitoring_results WHERE kind = 'data_drift' "
                "AND feature <> ''"
            ).fetchall()
        values = {"model": [model_name], "feature": [f[0] for f in features]}
        for q in queries(doc):
            if q.language != "sql" or "monitoring_results" not in q.text:
                continue
            with engine.connect() as conn:
                result = conn.exec_driver_sql(expand_sql(q.text, values, multi))
                columns, rows = list(result.keys()), result.fetchall()
            assert rows, q.id
            blank = [c for i, c in enumerate(columns) if all(r[i] is None for r in rows)]
            assert not blank, (q.id, blank)
            checked += 1
    assert checked >= 10
