"""The store-reading exporter on a real (SQLite, migrated) monitoring store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, delete, insert

from monitoring import compute
from monitoring.exporter import store_registry
from monitoring.results import replace_week
from registry_guard.guard import evaluate_guard
from registry_guard.policy import load_guard_policy, load_policy
from rollguard.db import make_engine
from rollguard.db.models import (
    AliasAudit,
    ChampionPointer,
    GateDecisionRow,
    GuardCheckRow,
    MonitoringResult,
    PipelineRun,
)
from rollguard.settings import Settings
from rollguard.store import open_store

MODEL = "m"
T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def samples(engine_factory, model: str = MODEL, features=None) -> dict[tuple[str, tuple], float]:  # type: ignore[no-untyped-def]
    kw = {} if features is None else {"features": features}
    text = generate_latest(store_registry(engine_factory, model, **kw)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def result(week: str, kind: str, metric: str, value, feature: str = "", **kw):  # type: ignore[no-untyped-def]
    return dict(
        model_name=kw.pop("model_name", MODEL),
        week=week,
        kind=kind,
        metric=metric,
        feature=feature,
        value=value,
        state=kw.pop("state", "ok"),
        detail=kw.pop("detail", None),
        model_version=kw.pop("model_version", "2"),
        computed_at=T0,
    )


def fill(engine: Engine) -> None:
    rows = [
        # an older week that must not be exported
        result("1997-05-05", "data_drift", "drift_share", 0.9),
        result("1997-04-07", "quality", "degraded", 1.0),
        result("1997-05-12", "data_drift", "drift_share", 0.25),
        result("1997-05-12", "data_drift", "drift_score", 0.01, "recency_days", state="drift"),
        result("1997-05-12", "data_drift", "drifted", 1.0, "recency_days"),
        result("1997-05-12", "data_drift", "drift_score", None, "frequency", state="skipped"),
        result("1997-05-12", "score_drift", "psi", 0.31),
        result("1997-05-12", "score_drift", "score_p50", 0.1),
        result("1997-05-12", "score_drift", "score_p90", 0.4),
        result("1997-05-12", "score_drift", "score_p99", 0.8),
        result("1997-05-12", "kpi", "targeted_count", 2357.0),
        result("1997-05-12", "kpi", "lift", 3.1),
        result("1997-05-12", "kpi", "random_lift", 1.0),
        result("1997-05-12", "kpi", "base_rate", 0.12),
        # quality lags: its newest week is older than the drift week
        result("1997-04-14", "quality", "average_precision", 0.41),
        result("1997-04-14", "quality", "expected_average_precision", 0.45),
        result("1997-04-14", "quality", "expected_roc_auc", 0.74),
        result("1997-04-14", "quality", "degraded", 0.0),
        result("1997-04-14", "quality", "roc_auc_ci_high", 0.76),
        result("1997-04-14", "quality", "roc_auc", None, state="pending"),
        result("1997-05-12", "data_drift", "drift_share", 0.7, model_name="other"),
    ]
    with engine.begin() as conn:
        conn.execute(insert(MonitoringResult), rows)
        conn.execute(
            insert(GuardCheckRow),
            [
                dict(model_name=MODEL, champion_version="2", state="degraded", reason="r",
                     report="{}", checked_at=T0),
                dict(model_name=MODEL, champion_version="2", state="inconclusive", reason="r",
                     report="{}", checked_at=T0.replace(hour=13)),
            ],
        )  # fmt: skip
        conn.execute(
            insert(GateDecisionRow),
            [
                dict(model_name=MODEL, challenger_version=v, champion_version=None, outcome=o,
                     reason_code="x", actor="pipeline", report="{}", decided_at=T0)
                for v, o in (("1", "bootstrap"), ("2", "promote"), ("3", "reject"), ("4", "reject"))
            ],
        )  # fmt: skip
        audit = dict(model_name=MODEL, alias="champion", from_version="3", to_version="2",
                     reason="r", evidence="{}")  # fmt: skip
        conn.execute(
            insert(AliasAudit),
            [
                {**audit, "action": "rollback", "outcome": "moved", "actor": "alert",
                 "fingerprint": "a", "moved_at": T0},
                {**audit, "action": "rollback", "outcome": "refused", "actor": "alert",
                 "fingerprint": None, "moved_at": T0.replace(hour=14)},
                {**audit, "action": "promote", "outcome": "moved", "actor": "pipeline",
                 "fingerprint": None, "moved_at": T0.replace(hour=15)},
            ],
        )  # fmt: skip
        conn.execute(insert(ChampionPointer).values(model_name=MODEL, version="2", updated_at=T0))
        conn.execute(
            insert(PipelineRun),
            [
                dict(dag_id="d", run_id="1", state="success", finished_at=T0),
                dict(dag_id="d", run_id="2", state="failed", finished_at=T0.replace(hour=18)),
                dict(dag_id="e", run_id="1", state="success", finished_at=T0),
            ],
        )


def test_exports_the_newest_week_of_each_kind_and_counts_from_the_store(
    settings: Settings,
) -> None:
    engine = open_store(settings)
    fill(engine)
    check_exported(samples(lambda: engine))


@pytest.mark.postgres
def test_same_export_on_postgresql(postgres_url: str) -> None:
    """The stack's store is PostgreSQL: the same queries, the same figures."""
    from rollguard import db

    db.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:  # the session database is shared: start from a clean model
            for table in (MonitoringResult, GuardCheckRow, GateDecisionRow, AliasAudit,
                          ChampionPointer):  # fmt: skip
                conn.execute(delete(table).where(table.model_name == MODEL))
            conn.execute(delete(PipelineRun).where(PipelineRun.dag_id.in_(["d", "e"])))
        fill(engine)
        check_exported(samples(lambda: engine))
    finally:
        engine.dispose()


def check_exported(got: dict[tuple[str, tuple], float]) -> None:
    assert got[("rollguard_exporter_store_up", ())] == 1
    assert got[("rollguard_dataset_drift_share", ())] == 0.25
    assert got[("rollguard_feature_drift_score", (("feature", "recency_days"),))] == 0.01
    assert ("rollguard_feature_drift_score", (("feature", "frequency"),)) not in got
    assert got[("rollguard_feature_drifted", (("feature", "recency_days"),))] == 1
    assert got[("rollguard_score_drift_psi", ())] == 0.31
    assert got[("rollguard_score_quantile", (("quantile", "0.99"),))] == 0.8
    ap = (("metric", "average_precision"),)
    assert got[("rollguard_live_quality", ap)] == 0.41
    assert got[("rollguard_expected_quality", ap)] == 0.45
    assert got[("rollguard_expected_quality", (("metric", "roc_auc"),))] == 0.74
    ci = (("bound", "high"), ("metric", "roc_auc"))
    assert got[("rollguard_live_quality_ci", ci)] == 0.76
    # the newest quality week's row, labelled with the metric the rule judges
    assert got[("rollguard_live_quality_degraded", (("metric", "roc_auc"),))] == 0
    assert got[("rollguard_live_quality_state", (("state", "ok"),))] == 1
    assert got[("rollguard_live_quality_state", (("state", "inconclusive"),))] == 0
    assert ("rollguard_live_quality", (("metric", "roc_auc"),)) not in got  # pending: no sample
    kpi = (("kpi", "lift"), ("targeting", "model"))
    assert got[("rollguard_business_kpi", kpi)] == 3.1
    assert got[("rollguard_business_kpi", (("kpi", "lift"), ("targeting", "random")))] == 1.0
    tc = (("kpi", "targeted_count"), ("targeting", "random"))
    assert got[("rollguard_business_kpi", tc)] == 2357
    assert got[("rollguard_base_rate", ())] == 0.12
    week = datetime(1997, 5, 12, tzinfo=UTC).timestamp()
    assert got[("rollguard_monitoring_week_timestamp_seconds", ())] == week
    assert got[("rollguard_guard_state", (("state", "inconclusive"),))] == 1
    assert got[("rollguard_guard_state", (("state", "degraded"),))] == 0
    assert got[("rollguard_gate_decisions_total", (("decision", "reject"),))] == 2
    assert got[("rollguard_gate_decisions_total", (("decision", "promote"),))] == 1
    assert got[("rollguard_rollbacks_total", (("actor", "alert"),))] == 1  # refused not counted
    assert got[("rollguard_rollbacks_total", (("actor", "guard"),))] == 0
    assert got[("rollguard_last_rollback_timestamp_seconds", ())] == T0.timestamp()
    assert got[("rollguard_champion_version", ())] == 2
    d = (("dag_id", "d"),)
    assert got[("rollguard_pipeline_last_success_timestamp_seconds", d)] == T0.timestamp()
    assert got[("rollguard_pipeline_last_run_failed", d)] == 1
    assert got[("rollguard_pipeline_last_run_failed", (("dag_id", "e"),))] == 0


def test_empty_store_exports_zero_counters_and_no_figures(settings: Settings) -> None:
    engine = open_store(settings)
    got = samples(lambda: engine)
    assert got[("rollguard_exporter_store_up", ())] == 1
    assert got[("rollguard_rollbacks_total", (("actor", "human"),))] == 0
    assert got[("rollguard_guard_state", (("state", "ok"),))] == 0
    assert not any(name == "rollguard_live_quality_degraded" for name, _ in got)
    assert got[("rollguard_live_quality_state", (("state", "inconclusive"),))] == 0


def test_regression_week_exports_mae_baselines_and_an_inconclusive_verdict(
    settings: Settings,
) -> None:
    """One rule and one dashboard query serve both task types: the metric is a label."""
    engine = open_store(settings)
    rows = [
        result("2024-03-04", "quality", "mae", 24.5),
        result("2024-03-04", "quality", "expected_mae", 23.0),
        result("2024-03-04", "quality", "mae_ci_low", 22.0),
        result("2024-03-04", "quality", "mae_ci_high", 27.0),
        result("2024-03-04", "quality", "degraded", 0.0),
        # the newest week had too few rows: no 0/1 figure, state inconclusive
        result("2024-03-11", "quality", "mae", 31.0),
        result("2024-03-11", "quality", "degraded", None, state="inconclusive"),
        result("2024-03-11", "kpi", "mae", 31.0),
        result("2024-03-11", "kpi", "realized_total", 9000.0),
        result("2024-03-11", "kpi", "baseline_mae", 50.0, "historical"),
        result("2024-03-11", "kpi", "baseline_mae", 99.0, "training_median"),
    ]
    with engine.begin() as conn:
        conn.execute(insert(MonitoringResult), rows)
    got = samples(lambda: engine)
    assert got[("rollguard_live_quality", (("metric", "mae"),))] == 31.0
    assert got[("rollguard_live_quality_state", (("state", "inconclusive"),))] == 1
    assert got[("rollguard_live_quality_state", (("state", "ok"),))] == 0
    # the newest verdict is inconclusive, so no degraded sample from that week
    assert not any(name == "rollguard_live_quality_degraded" for name, _ in got)
    kpi = "rollguard_business_kpi"
    assert got[(kpi, (("kpi", "mae"), ("targeting", "model")))] == 31.0
    assert got[(kpi, (("kpi", "mae"), ("targeting", "historical")))] == 50.0
    assert got[(kpi, (("kpi", "mae"), ("targeting", "training_median")))] == 99.0
    assert got[(kpi, (("kpi", "total"), ("targeting", "realized")))] == 9000.0
    assert ("rollguard_base_rate", ()) not in got


def test_unreadable_store_is_store_up_zero_not_an_error(tmp_path: Path) -> None:
    missing = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: queries fail
    got = samples(lambda: missing)
    assert got == {("rollguard_exporter_store_up", ()): 0.0}

    def refuse() -> Engine:
        raise RuntimeError("store is down")

    assert samples(refuse) == {("rollguard_exporter_store_up", ()): 0.0}


def feature_states(got: dict[tuple[str, tuple], float], feature: str) -> dict[str, float]:
    return {
        dict(labels)["state"]: value
        for (name, labels), value in got.items()
        if name == "rollguard_feature_state" and dict(labels)["feature"] == feature
    }


def test_every_feature_exports_its_state_skipped_and_missing_ones_included(
    settings: Settings,
) -> None:
    """A feature that went constant or all-missing, or whose column is gone, has no drift
    figure; its state still reaches Prometheus, one series per state, so it cannot look like a
    feature without drift."""
    week, older = "1997-05-12", "1997-05-05"
    dd = "data_drift"
    rows = [
        result(older, dd, "drifted", None, "n_orders", state="skipped",
               detail="missing: all values empty (NaN/inf) in the current data"),
        result(week, dd, "drift_score", 0.3, "recency_days", state="drift"),
        result(week, dd, "drifted", 1.0, "recency_days", state="drift"),
        result(week, dd, "drifted", 0.0, "n_orders"),
        result(week, dd, "drift_score", None, "spend_4w", state="skipped",
               detail="constant: constant in the current data (every value 0)"),
        result(week, dd, "drifted", None, "spend_4w", state="skipped",
               detail="constant: constant in the current data (every value 0)"),
        # written before the reasons had a stable prefix: read from the words
        result(week, dd, "drifted", None, "frequency", state="skipped",
               detail="all values empty (NaN/inf) in the current data"),
        result(week, dd, "drifted", None, "tenure_days", state="schema_mismatch",
               detail="column tenure_days missing from the current data"),
        result(week, dd, "varies_weekly", 1.0, "spend_4w"),
        result(week, dd, "varies_weekly", 0.0, "frequency"),
        result(week, dd, "drifted", 0.0, "not_declared"),
        result(week, dd, "schema", 1.0, state="schema_mismatch"),
        # the whole dataset was skipped: no value, and still the newest drift week
        result(week, dd, "drift_share", None, state="skipped"),
    ]  # fmt: skip
    engine = open_store(settings)
    with engine.begin() as conn:
        conn.execute(insert(MonitoringResult), rows)
    declared = ["recency_days", "n_orders", "spend_4w", "frequency", "tenure_days", "cds_total"]
    got = samples(lambda: engine, features=declared)
    expected = {
        "recency_days": "drifted",
        "n_orders": "ok",  # the newest week's state, not the older week's
        "spend_4w": "skipped_constant",
        "frequency": "skipped_missing",
        "tenure_days": "schema_mismatch",
    }
    for feature, state in expected.items():
        states = feature_states(got, feature)
        assert set(states) == {
            "ok", "drifted", "skipped_constant", "skipped_missing", "schema_mismatch"
        }  # fmt: skip
        assert {s for s, v in states.items() if v == 1} == {state}, (feature, states)
    # declared, no row this week: every state 0 (unknown, never "ok")
    assert set(feature_states(got, "cds_total").values()) == {0.0}
    assert feature_states(got, "not_declared") == {}  # bounded by the use case's features
    assert all(dict(labels)["model"] == MODEL for name, labels in got if "feature_state" in name)
    varies = "rollguard_feature_varies_weekly"
    assert got[(varies, (("feature", "spend_4w"), ("model", MODEL)))] == 1.0
    assert got[(varies, (("feature", "frequency"), ("model", MODEL)))] == 0.0
    assert (varies, (("feature", "recency_days"), ("model", MODEL))) not in got
    assert got[("rollguard_data_schema_mismatch", (("model", MODEL),))] == 1.0

    # Without the use case's list: the features of the newest drift week's rows.
    found = samples(lambda: engine)
    assert feature_states(found, "not_declared")["ok"] == 1.0
    assert feature_states(found, "cds_total") == {}


def test_a_store_without_drift_rows_exports_no_feature_state(settings: Settings) -> None:
    engine = open_store(settings)
    got = samples(lambda: engine, features=["recency_days"])
    assert set(feature_states(got, "recency_days").values()) == {0.0}
    assert ("rollguard_data_schema_mismatch", (("model", MODEL),)) not in got


def test_a_feature_that_breaks_reaches_the_export_from_the_drift_computation(
    settings: Settings,
) -> None:
    """From the computation to the scrape: the week's rows (one column all missing, one constant
    although it varied every training week, one seasonal flag constant, one column gone) go
    through the store to ``rollguard_feature_state``, and the varies-weekly figure beside it."""
    rng = np.random.default_rng(0)
    mapping = compute.ColumnMapping(("a", "b", "c", "flag", "gone"), keys=("id", "cutoff"))

    def week(n: int, cutoff: str, flag: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": np.arange(n),
                "cutoff": pd.Timestamp(cutoff),
                "a": rng.normal(0, 1, n),
                "b": rng.normal(0, 1, n),
                "c": rng.poisson(3, n).astype(float),
                "flag": flag,
                "gone": rng.normal(0, 1, n),
            }
        )

    reference = pd.concat(
        [week(300, "1997-04-07", 0.0), week(300, "1997-04-14", 1.0), week(300, "1997-04-21", 0.0)]
    )
    reference.loc[reference.index[:5], "flag"] = 1.0  # a few flagged rows in the first week only
    current = week(300, "1997-05-12", 0.0).drop(columns="gone")
    current["b"] = np.nan  # the feature path stopped producing values
    current["c"] = 0.0  # ... or fills a default
    result = compute.data_drift_figures(reference, current, mapping, sample_rows=10_000, seed=0)
    engine = open_store(settings)
    replace_week(
        engine, model_name=MODEL, week="1997-05-12", model_version="2", figures=result.figures
    )
    got = samples(lambda: engine, features=list(mapping.features))
    states = {f: {s for s, v in feature_states(got, f).items() if v == 1} for f in mapping.features}
    assert states == {
        "a": {"ok"},
        "b": {"skipped_missing"},
        "c": {"skipped_constant"},
        "flag": {"skipped_constant"},
        "gone": {"schema_mismatch"},
    }
    varies = {
        dict(labels)["feature"]: value
        for (name, labels), value in got.items()
        if name == "rollguard_feature_varies_weekly"
    }
    # flag was constant within two of the reference weeks: a constant week is nothing new for it
    assert varies == {"a": 1.0, "b": 1.0, "c": 1.0, "flag": 0.0, "gone": 1.0}
    assert got[("rollguard_data_schema_mismatch", (("model", MODEL),))] == 1.0


def _guard_row(report: str, hour: int) -> dict[str, object]:
    return dict(model_name=MODEL, champion_version="2", state="inconclusive", reason="r",
                report=report, checked_at=T0.replace(hour=hour))  # fmt: skip


def test_exports_the_evidence_of_the_newest_guard_check(settings: Settings) -> None:
    """Each check's verdict and evidence (rows, positives, value, threshold, interval) come from
    the newest ``guard_checks`` report, as the guard wrote it."""
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.1).astype(np.int64)
    champion = np.clip(0.1 + 0.3 * labels + rng.normal(0, 0.1, 3000), 0, 1)
    previous = np.clip(0.1 + 0.3 * labels + rng.normal(0, 0.1, 3000), 0, 1)
    report = evaluate_guard(
        live_scores=rng.random(400),  # fewer than psi_min_predictions: inconclusive, no PSI
        reference_scores=rng.random(2000),
        champion_scores=champion,
        previous_scores=previous,
        labels=labels,
        gate_policy=load_policy(),
        guard_policy=load_guard_policy(),
    )
    realized = report.check("realized_quality")
    engine = open_store(settings)
    with engine.begin() as conn:
        conn.execute(
            insert(GuardCheckRow), [_guard_row("{}", 11), _guard_row(report.to_json(), 12)]
        )

    got = samples(lambda: engine)

    def evidence(check: str, figure: str) -> float | None:
        return got.get(("rollguard_guard_evidence", (("check", check), ("figure", figure))))

    assert evidence("realized_quality", "n_rows") == 3000
    assert evidence("realized_quality", "n_positives") == int(labels.sum())
    assert evidence("realized_quality", "ci_low") == pytest.approx(realized.ci_low)
    assert evidence("realized_quality", "ci_high") == pytest.approx(realized.ci_high)
    assert evidence("realized_quality", "value") == pytest.approx(realized.value)
    assert (
        evidence("realized_quality", "threshold")
        == -load_policy().classification.non_inferiority_margin
    )
    assert evidence("score_shift", "n_rows") == 400
    assert evidence("score_shift", "threshold") == load_guard_policy().psi_threshold
    assert evidence("score_shift", "value") is None  # not judged: no PSI sample
    assert evidence("score_shift", "ci_low") is None
    verdict = {
        (dict(labels)["check"], dict(labels)["verdict"]): value
        for (name, labels), value in got.items()
        if name == "rollguard_guard_check_verdict"
    }
    assert verdict[("score_shift", "inconclusive")] == 1
    assert verdict[("realized_quality", realized.verdict)] == 1
    assert sum(verdict.values()) == 2 and len(verdict) == 8


def test_an_unreadable_guard_report_exports_no_evidence(settings: Settings) -> None:
    engine = open_store(settings)
    with engine.begin() as conn:
        conn.execute(insert(GuardCheckRow), [_guard_row("not json", 12)])

    got = samples(lambda: engine)

    assert got[("rollguard_exporter_store_up", ())] == 1
    assert got[("rollguard_guard_state", (("state", "inconclusive"),))] == 1
    assert not any(name.startswith("rollguard_guard_evidence") for name, _ in got)
