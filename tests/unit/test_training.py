"""Cutoff planning, determinism, evaluation metrics and SHAP additivity on the real CDNOW data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from domain.evaluation import (
    TrainingDataError,
    build_training_set,
    make_evaluation_rows,
    plan_cutoffs,
)
from pipeline.training import TrainingConfig, evaluate, evaluate_model, train_model
from rollguard.weeks import iso_week_label
from usecases.cdnow import USECASE as CDNOW
from usecases.cdnow.source import load_dataset

FAST = TrainingConfig(seed=7, nthread=2, num_boost_round=40, early_stopping_rounds=10)


@pytest.fixture(scope="module")
def cdnow():
    tx, _, _ = load_dataset()
    weeks = sorted({iso_week_label(d.date()) for d in tx["date"]})
    return tx, weeks


@pytest.fixture(scope="module")
def small_set(cdnow):
    tx, weeks = cdnow
    plan = plan_cutoffs(CDNOW, weeks, n_fit=2, n_validation=1)
    return build_training_set(CDNOW, tx, plan)


def test_plan_is_purged_and_out_of_time(cdnow):
    _, weeks = cdnow
    plan = plan_cutoffs(CDNOW, weeks, n_fit=4, n_validation=2)
    horizon = timedelta(days=plan.horizon_days)
    # The last data week is 1998-W27; the horizon of 1998-06-08 is W24..W27, all ingested.
    assert plan.evaluation == date(1998, 6, 8)
    assert len(plan.fit) == 4 and len(plan.validation) == 2
    assert all(c.weekday() == 0 for c in plan.training)
    assert all(c + horizon <= plan.evaluation for c in plan.training)
    assert all(c + horizon <= min(plan.validation) for c in plan.fit)
    assert list(plan.training) == sorted(plan.training)


def test_plan_on_a_truncated_feed_uses_only_matured_labels(cdnow):
    _, weeks = cdnow
    ingested = [w for w in weeks if w <= "1997-W30"]
    plan = plan_cutoffs(CDNOW, ingested, n_fit=3)
    # 1997-W27 starts 1997-06-30; its horizon W27..W30 is the newest that is complete.
    assert plan.evaluation == date(1997, 6, 30)


def test_plan_refuses_unmatured_cutoff_and_short_history(cdnow):
    _, weeks = cdnow
    with pytest.raises(TrainingDataError, match="no matured label"):
        plan_cutoffs(CDNOW, weeks, n_fit=2, evaluation_cutoff=date(1998, 6, 15))
    with pytest.raises(TrainingDataError, match="history too short"):
        plan_cutoffs(CDNOW, [w for w in weeks if w <= "1997-W12"], n_fit=8)
    with pytest.raises(ValueError, match="Monday"):
        plan_cutoffs(CDNOW, weeks, n_fit=2, evaluation_cutoff=date(1998, 6, 2))


def test_training_set_rows_match_cutoffs(small_set):
    assert set(small_set.fit["cutoff"].dt.date) == set(small_set.plan.fit)
    assert set(small_set.validation["cutoff"].dt.date) == set(small_set.plan.validation)
    assert small_set.evaluation["label_available"].all()
    assert len(small_set.dataset_sha256) == 64


def test_training_is_deterministic(small_set):
    a = train_model(CDNOW, small_set, FAST)
    b = train_model(CDNOW, small_set, FAST)
    assert a.booster.save_raw("ubj") == b.booster.save_raw("ubj")
    assert evaluate_model(CDNOW, a, small_set, budget=0.1) == evaluate_model(
        CDNOW, b, small_set, budget=0.1
    )
    other = train_model(
        CDNOW,
        small_set,
        TrainingConfig(
            seed=8,
            nthread=2,
            num_boost_round=40,
            early_stopping_rounds=10,
            tunable={**FAST.tunable, "subsample": 0.7},
        ),
    )
    assert other.booster.save_raw("ubj") != a.booster.save_raw("ubj")


def test_model_beats_random_on_the_evaluation_cutoff(small_set):
    m = evaluate_model(CDNOW, train_model(CDNOW, small_set, FAST), small_set, budget=0.1)
    assert m.n_rows > 20_000 and m.n_positives > 500
    assert m.roc_auc > 0.75
    assert m.average_precision > 2 * m.base_rate
    assert m.lift_at_budget > 2.0
    assert 0.1 < m.revenue_share_at_budget <= 1.0


def test_evaluate_lift_and_revenue_share_by_hand():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.05, 0.01, 0.4, 0.6, 0.7])
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    revenue = np.array([10.0, 0, 0, 0, 30.0, 0, 0, 0, 0, 0])
    m = evaluate(CDNOW, scores, labels, revenue, budget=0.2)  # top 2: rows 0 and 1
    assert m.lift_at_budget == pytest.approx(0.5 / 0.2)
    assert m.revenue_share_at_budget == pytest.approx(10 / 40)


def test_shap_values_add_up_to_the_margin(small_set):
    from pipeline.tracking import ADDITIVITY_TOLERANCE, explain
    from pipeline.training import predict

    model = train_model(CDNOW, small_set, FAST)
    rows = small_set.evaluation.head(300)
    expl = explain(CDNOW, model.booster, rows)
    margin = predict(CDNOW, model.booster, rows, margin=True)
    assert expl.values.shape == (300, 18)
    np.testing.assert_allclose(
        expl.values.sum(axis=1) + expl.base_value, margin, atol=ADDITIVITY_TOLERANCE
    )
    assert expl.method in {"shap.TreeExplainer", "xgboost.pred_contribs"}
    assert (expl.method == "shap.TreeExplainer") == (expl.fallback_reason is None)


def test_shap_falls_back_to_pred_contribs_when_shap_breaks(small_set, monkeypatch):
    import shap

    from pipeline.tracking import explain

    def broken(*_a, **_k):
        raise RuntimeError("base_score format not understood")

    monkeypatch.setattr(shap, "TreeExplainer", broken)
    expl = explain(
        CDNOW, train_model(CDNOW, small_set, FAST).booster, small_set.evaluation.head(50)
    )
    assert expl.method == "xgboost.pred_contribs"
    assert "base_score format" in (expl.fallback_reason or "")


def test_evaluation_set_is_aligned(cdnow):
    tx, weeks = cdnow
    ev = make_evaluation_rows(CDNOW, tx, weeks)
    assert ev.cutoff == date(1998, 6, 8) and ev.cutoffs == (date(1998, 6, 8),)
    revenue, labels = ev.rows[CDNOW.value.column], ev.rows[CDNOW.label.column]
    assert len(ev.rows) > 20_000 and ev.rows[CDNOW.entity_column].is_unique
    assert ((revenue > 0) == (labels == 1)).mean() > 0.99
