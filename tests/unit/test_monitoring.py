"""Monitoring computations: drift found on a shifted feature and not on a copy, the edge states,
seeded sampling, hand-computable quality and KPI figures, and rows replaced per week in the store
(SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from domain.metrics import population_stability_index
from monitoring import compute
from monitoring.compute import Figure
from monitoring.results import record_pipeline_run, replace_week, week_rows
from monitoring.weekly import parse_week
from rollguard import db
from rollguard.errors import ConfigurationError
from tests.support.regression_usecase import USECASE as TOY
from tests.support.regression_usecase import make_records

COLS = ("a", "b", "c")
#: The three numerical features; ``customer_id`` is a key column, never compared.
MAPPING = compute.ColumnMapping(COLS, keys=("customer_id",))


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "a": rng.gamma(2.0, 10.0, n) + shift,
            "b": rng.normal(50, 5, n),
            "c": rng.poisson(3, n).astype(float),
        }
    )


def by_key(figures: list[Figure]) -> dict[tuple[str, str], Figure]:
    return {(f.metric, f.feature): f for f in figures}


def test_drift_found_on_a_shifted_feature_and_not_on_a_copy() -> None:
    ref = frame(5000, 1)
    same = compute.data_drift_figures(ref, ref.copy(), MAPPING, sample_rows=50_000, seed=0)
    got = by_key(same.figures)
    assert same.drift_share == 0.0 and same.drifted == ()
    assert all(got[("drifted", c)].value == 0.0 for c in COLS)
    assert got[("drift_score", "a")].value == pytest.approx(0.0, abs=1e-9)
    assert got[("schema", "")].state == "ok"

    moved = compute.data_drift_figures(
        ref, frame(5000, 2, shift=15.0), MAPPING, sample_rows=50_000, seed=0
    )
    got = by_key(moved.figures)
    assert moved.drifted == ("a",)
    assert got[("drifted", "a")].value == 1.0 and got[("drift_score", "a")].state == "drift"
    assert got[("drifted", "b")].value == 0.0
    assert got[("drift_share", "")].value == pytest.approx(1 / 3)
    assert got[("drifted_features", "")].value == 1.0
    assert got[("n_features", "")].value == 3.0
    assert "Wasserstein" in (got[("drift_score", "a")].detail or "")
    assert moved.snapshot is not None


def test_no_rows_in_the_window_is_no_data() -> None:
    ref = frame(100, 1)
    result = compute.data_drift_figures(ref, ref.iloc[:0], MAPPING, sample_rows=1000, seed=0)
    got = by_key(result.figures)
    for metric in ("drift_share", "drifted_features", "n_features"):
        assert got[(metric, "")].state == "no_data" and got[(metric, "")].value is None
    assert "current week" in (got[("drift_share", "")].detail or "")
    assert result.snapshot is None


@pytest.mark.parametrize(
    ("fill", "reason"), [(7.0, "constant in the reference"), (np.nan, "all values empty")]
)
def test_constant_or_empty_column_is_skipped_and_raises_no_alert(fill: float, reason: str) -> None:
    ref, cur = frame(3000, 1), frame(3000, 2)
    ref["c"] = fill
    cur["c"] = 99.0 if np.isfinite(fill) else np.nan  # a "shift" that must not count
    result = compute.data_drift_figures(ref, cur, MAPPING, sample_rows=50_000, seed=0)
    got = by_key(result.figures)
    for metric in ("drift_score", "drifted"):
        assert got[(metric, "c")].state == "skipped" and got[(metric, "c")].value is None
        assert reason in (got[(metric, "c")].detail or "")
    assert got[("n_features", "")].value == 2.0
    assert got[("drift_share", "")].value == 0.0
    assert "c" not in result.drifted


@pytest.mark.parametrize(
    ("side", "fill", "reason"),
    [
        ("current", np.nan, "missing"),  # the stable reasons' text is the contract
        ("current", 0.0, "constant"),
        ("reference", np.inf, "missing"),
        ("reference", 4.0, "constant"),
    ],
)
def test_a_skipped_feature_says_missing_or_constant_in_a_stable_reason(
    side: str, fill: float, reason: str
) -> None:
    frames = {"reference": frame(2000, 1), "current": frame(2000, 2)}
    frames[side]["b"] = fill
    result = compute.data_drift_figures(
        frames["reference"], frames["current"], MAPPING, sample_rows=50_000, seed=0
    )
    row = by_key(result.figures)[("drifted", "b")]
    assert row.state == "skipped" and (row.detail or "").startswith(f"{reason}: ")
    assert compute.skip_reason(row.detail) == reason


def test_skip_reason_reads_rows_written_before_the_stable_reasons() -> None:
    legacy = {
        "all values empty (NaN/inf) in the current data": compute.SKIP_MISSING,
        "all values missing in the reference data": compute.SKIP_MISSING,
        "constant in the current data (every value 0)": compute.SKIP_CONSTANT,
        "one level on both sides (every value 'BB')": compute.SKIP_CONSTANT,
        "no champion: nothing to compare with": None,
        None: None,
    }
    for detail, reason in legacy.items():
        assert compute.skip_reason(detail) == reason, detail


def test_varies_weekly_marks_features_constant_in_some_reference_week() -> None:
    """A seasonal flag (0 except in one week) or a rare count that is 0 all of a small week does
    not vary every week; a feature that varied in each week does."""
    weeks = [pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=k) for k in range(3)]
    parts = []
    for k, week in enumerate(weeks):
        part = frame(200, k).assign(cutoff=week)
        part["c"] = 1.0 if k == 1 else 0.0  # the seasonal flag
        parts.append(part)
    reference = pd.concat(parts, ignore_index=True)
    got = compute.varies_weekly(reference, MAPPING)
    assert got == {"a": True, "b": True, "c": False}
    # Without a cutoff column the reference is one week: c varies over the whole frame.
    assert compute.varies_weekly(reference.drop(columns="cutoff"), MAPPING)["c"] is True
    figures = by_key(
        compute.data_drift_figures(
            reference, frame(500, 9), MAPPING, sample_rows=50_000, seed=0
        ).figures
    )
    assert figures[(compute.VARIES_WEEKLY, "c")].value == 0.0
    assert figures[(compute.VARIES_WEEKLY, "a")].value == 1.0
    assert figures[(compute.VARIES_WEEKLY, "a")].reference_size == 600


def test_every_column_unusable_is_skipped_not_an_error() -> None:
    ref = frame(200, 1)
    ref[list(COLS)] = 1.0
    result = compute.data_drift_figures(ref, ref.copy(), MAPPING, sample_rows=1000, seed=0)
    got = by_key(result.figures)
    assert got[("drift_share", "")].state == "skipped" and got[("drift_share", "")].value is None


def test_missing_and_extra_columns_are_a_named_schema_mismatch() -> None:
    ref, cur = frame(2000, 1), frame(2000, 2).drop(columns=["b"])
    cur["surprise"] = 1.0
    result = compute.data_drift_figures(ref, cur, MAPPING, sample_rows=50_000, seed=0)
    got = by_key(result.figures)
    schema = got[("schema", "")]
    assert schema.state == "schema_mismatch" and schema.value == 1.0
    assert "current: b" in (schema.detail or "") and "surprise" in (schema.detail or "")
    assert got[("drift_score", "b")].state == "schema_mismatch"
    assert "missing from the current" in (got[("drift_score", "b")].detail or "")
    assert got[("n_features", "")].value == 2.0  # a and c still compared
    assert got[("drift_score", "a")].state in ("ok", "drift")


def test_sampling_is_capped_recorded_and_deterministic() -> None:
    ref, cur = frame(20_000, 1), frame(20_000, 2)
    one = compute.data_drift_figures(ref, cur, MAPPING, sample_rows=3000, seed=5)
    two = compute.data_drift_figures(ref, cur, MAPPING, sample_rows=3000, seed=5)
    other = compute.data_drift_figures(ref, cur, MAPPING, sample_rows=3000, seed=6)
    share = by_key(one.figures)[("drift_share", "")]
    assert share.sample_size == 3000 and share.reference_size == 3000
    scores = [by_key(r.figures)[("drift_score", "a")].value for r in (one, two, other)]
    assert scores[0] == scores[1] and scores[0] != scores[2]
    sample = compute.seeded_sample(ref, 3000, 5)
    assert sample.equals(compute.seeded_sample(ref, 3000, 5))
    assert len(sample) == 3000 and sample["customer_id"].is_monotonic_increasing
    assert compute.seeded_sample(ref, 50_000, 5) is ref


def test_score_drift_psi_matches_the_guard_and_flags_a_shift() -> None:
    rng = np.random.default_rng(3)
    ref = rng.beta(2, 8, 4000)
    same = compute.score_drift_figures(ref, ref.copy(), sample_rows=10_000, seed=0)
    got = by_key(same.figures)
    assert got[("psi", "")].value == pytest.approx(0.0, abs=1e-12)
    assert got[("drift_score", "")].state == "ok"
    live = rng.beta(6, 4, 4000)
    moved = by_key(compute.score_drift_figures(ref, live, sample_rows=10_000, seed=0).figures)
    assert moved[("psi", "")].value == pytest.approx(population_stability_index(ref, live))
    assert moved[("drift_score", "")].state == "drift"
    assert moved[("score_p50", "")].value == pytest.approx(np.quantile(live, 0.5))
    assert moved[("score_mean", "")].value == pytest.approx(live.mean())
    empty = by_key(compute.score_drift_figures(ref, np.array([]), sample_rows=10, seed=0).figures)
    assert {f.state for f in empty.values()} == {"no_data"}
    noref = by_key(
        compute.score_drift_figures(None, live, sample_rows=10, seed=0, skip_reason="x").figures
    )
    assert noref[("psi", "")].state == "skipped" and noref[("score_p90", "")].state == "ok"


def test_kpis_by_hand() -> None:
    # 10 customers, 2 targeted (ids 1, 2); repurchasers 1, 3, 5, 7 (base 0.4); revenue 10 each for
    # repurchasers, id 1 spends 30. Targeted: 1 of 2 repurchased -> rate 0.5, lift 1.25;
    # targeted revenue 30 of 60 -> share 0.5. Random pick of 2: rate 0.4, revenue 60*2/10 = 12,
    # share 0.2, lift 1.
    preds = pd.DataFrame(
        {"customer_id": range(1, 11), "targeted": [i in (1, 2) for i in range(1, 11)]}
    )
    truth = pd.DataFrame(
        {
            "customer_id": range(1, 11),
            "y": [1 if i in (1, 3, 5, 7) else 0 for i in range(1, 11)],
            "rev": [30.0 if i == 1 else (10.0 if i in (3, 5, 7) else 0.0) for i in range(1, 11)],
        }
    )
    got = {
        f.metric: f.value
        for f in compute.kpi_figures(preds, truth, key="customer_id", label="y", value="rev")
    }
    assert got == pytest.approx(
        {
            "targeted_count": 2,
            "targeted_positive_rate": 0.5,
            "base_rate": 0.4,
            "lift": 1.25,
            "targeted_value": 30.0,
            "targeted_value_share": 0.5,
            "random_positive_rate": 0.4,
            "random_value": 12.0,
            "random_value_share": 0.2,
            "random_lift": 1.0,
        }
    )
    assert set(got) == set(compute.KPI_METRICS)


def test_kpis_edge_states() -> None:
    preds = pd.DataFrame({"customer_id": [1, 2], "targeted": [True, False]})
    none = compute.kpi_figures(
        preds,
        pd.DataFrame({"customer_id": [9], "y": [1], "rev": [1.0]}),
        key="customer_id",
        label="y",
        value="rev",
    )
    assert {f.state for f in none} == {"no_data"}
    zero = {
        f.metric: f
        for f in compute.kpi_figures(
            preds,
            pd.DataFrame({"customer_id": [1, 2], "y": [0, 0], "rev": [0.0, 0.0]}),
            key="customer_id",
            label="y",
            value="rev",
        )
    }
    assert zero["lift"].state == "skipped" and "base rate is 0" in (zero["lift"].detail or "")
    assert zero["targeted_value_share"].value is None
    assert zero["base_rate"].value == 0.0


def test_quality_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0])
    targeted = np.array([True, False, False, False])
    # AP: ranks 1 (pos, precision 1), 3 (pos, precision 2/3) -> (1 + 2/3) / 2 = 0.8333
    # AUC: pairs (pos > neg): 0.9>0.8, 0.9>0.2, 0.3>0.2 of 4 -> 0.75
    # Brier: ((0.1)^2 + 0.8^2 + 0.7^2 + 0.2^2) / 4 = 0.295
    got = by_key(
        compute.quality_figures(
            scores,
            labels,
            targeted,
            expected_average_precision=0.9,
            expected_roc_auc=0.9,
            rule=compute.LiveQualityRule(min_rows=2000, min_positives=100),
        )
    )
    assert got[("average_precision", "")].value == pytest.approx(5 / 6)
    assert got[("roc_auc", "")].value == pytest.approx(0.75)
    assert got[("brier", "")].value == pytest.approx(0.295)
    assert got[("precision_at_budget", "")].value == 1.0
    assert got[("expected_average_precision", "")].value == 0.9
    assert got[("expected_roc_auc", "")].value == 0.9
    thin = got[("degraded", "")]
    assert thin.state == "inconclusive" and thin.value is None
    assert "too little evidence" in (thin.detail or "")
    assert got[("roc_auc_ci_low", "")].value is None


def _informative(n: int, seed: int, shuffle: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.1).astype(np.int64)
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.2 * labels - 2)))
    if shuffle:
        scores = rng.permutation(scores)
    return scores, labels, scores >= np.quantile(scores, 0.9)


def test_degraded_rule_uses_the_roc_auc_interval_not_a_point_estimate() -> None:
    scores, labels, targeted = _informative(6000, seed=3)
    live_auc = compute.quality_figures(
        scores, labels, targeted, expected_average_precision=None, rule=compute.LiveQualityRule()
    )
    auc = by_key(live_auc)[("roc_auc", "")].value
    rule = compute.LiveQualityRule(min_rows=2000, min_positives=100, seed=7)
    kw = dict(expected_average_precision=0.5, rule=rule)

    # Live AUC slightly below the expectation, within margin and noise: not degraded.
    close = by_key(
        compute.quality_figures(scores, labels, targeted, expected_roc_auc=auc + 0.025, **kw)
    )
    low, high = close[("roc_auc_ci_low", "")].value, close[("roc_auc_ci_high", "")].value
    assert low < auc < high
    assert close[("degraded", "")].value == 0.0 and close[("degraded", "")].state == "ok"

    # A model that ranks at random (shuffled scores): degraded.
    bad_scores, bad_labels, bad_targeted = _informative(6000, seed=3, shuffle=True)
    broken = by_key(
        compute.quality_figures(bad_scores, bad_labels, bad_targeted, expected_roc_auc=auc, **kw)
    )
    assert broken[("degraded", "")].value == 1.0 and broken[("degraded", "")].state == "degraded"
    assert "CI [" in (broken[("degraded", "")].detail or "")

    # The same data and seed give the same interval.
    again = by_key(
        compute.quality_figures(scores, labels, targeted, expected_roc_auc=auc + 0.025, **kw)
    )
    assert again[("roc_auc_ci_high", "")].value == high

    # No expectation: skipped, never a silent pass or fail.
    unknown = by_key(compute.quality_figures(scores, labels, targeted, expected_roc_auc=None, **kw))
    assert unknown[("degraded", "")].state == "skipped"


def test_quality_of_an_empty_week_is_no_data() -> None:
    empty = compute.quality_figures(
        np.array([]),
        np.array([]),
        np.array([], bool),
        expected_average_precision=None,
        rule=compute.LiveQualityRule(),
    )
    assert {f.state for f in empty} == {"no_data"} and len(empty) == len(compute.QUALITY_METRICS)


# --- use-case declarations and regression ---------------------------------------------------------
def _toy_rows(weeks: int, per_week: int, seed: int, *, shift: bool = False) -> pd.DataFrame:
    from datetime import date, timedelta

    first = date(2024, 1, 1)
    records = make_records(weeks, per_week, seed=seed, first=first, shift=shift)
    cutoffs = [first + timedelta(days=7 * (i + 1)) for i in range(weeks)]
    return pd.concat(
        [TOY.build_rows(records, c, label_available=True) for c in cutoffs], ignore_index=True
    )


def test_column_mapping_follows_the_declarations() -> None:
    mapping = compute.ColumnMapping.from_usecase(TOY)
    assert mapping.features == ("nights", "lead_days", "segment", "meal")
    assert mapping.categorical == ("segment", "meal")
    assert mapping.numerical == ("nights", "lead_days")
    for key in ("booking_id", "cutoff", "rate", "room_revenue", "label_available", "last_rate"):
        assert key in mapping.keys
    rows = _toy_rows(2, 300, seed=1)
    result = compute.data_drift_figures(rows, rows.copy(), mapping, sample_rows=10_000, seed=0)
    got = by_key(result.figures)
    assert got[("schema", "")].state == "ok"  # key columns are expected, not "extra"
    assert result.drift_share == 0.0


def test_evidently_drift_on_a_categorical_column() -> None:
    mapping = compute.ColumnMapping.from_usecase(TOY)
    reference = _toy_rows(4, 400, seed=1)  # 1,600 rows: Evidently's large-sample tests
    moved = _toy_rows(2, 400, seed=2, shift=True)
    result = compute.data_drift_figures(reference, moved, mapping, sample_rows=10_000, seed=0)
    got = by_key(result.figures)
    # The segment mix moved (0.3/0.6/0.1 -> 0.2/0.3/0.5) and lead times doubled; meal and nights
    # did not move.
    assert "segment" in result.drifted and "lead_days" in result.drifted
    assert got[("drifted", "meal")].value == 0.0 and got[("drifted", "nights")].value == 0.0
    assert "Jensen-Shannon" in (got[("drift_score", "segment")].detail or "")
    assert got[("drift_share", "")].value == pytest.approx(2 / 4)
    small = compute.data_drift_figures(
        reference.iloc[:300], moved.iloc[:300], mapping, sample_rows=10_000, seed=0
    )
    assert "segment" in small.drifted  # chi-squared p-value on small samples
    assert "chi" in (by_key(small.figures)[("drift_score", "segment")].detail or "").lower()
    one_level = reference.assign(meal="BB")
    skipped = by_key(
        compute.data_drift_figures(
            one_level, one_level.copy(), mapping, sample_rows=10_000, seed=0
        ).figures
    )
    assert skipped[("drifted", "meal")].state == "skipped"
    assert "one level" in (skipped[("drifted", "meal")].detail or "")


def test_drift_share_is_the_retrain_rule_input() -> None:
    mapping = compute.ColumnMapping.from_usecase(TOY)
    reference = _toy_rows(4, 400, seed=1)
    moved = _toy_rows(2, 400, seed=2, shift=True)
    kw = dict(sample_rows=10_000, seed=0)
    above = compute.drift_share(reference, moved, mapping, threshold=0.4, **kw)
    assert above.share == pytest.approx(0.5) and above.exceeded
    assert above.drifted == ("lead_days", "segment") and above.n_features == 4
    at = compute.drift_share(reference, moved, mapping, threshold=0.5, **kw)
    assert not at.exceeded  # the rule is "above the threshold"
    none = compute.drift_share(reference, moved.iloc[:0], mapping, threshold=0.1, **kw)
    assert none.share is None and not none.exceeded
    with pytest.raises(ValueError):
        compute.drift_share(reference, moved, mapping, threshold=1.5, **kw)


def test_regression_quality_by_hand_and_inconclusive_on_few_rows() -> None:
    predictions = np.array([100.0, 80.0, 120.0, 50.0])
    labels = np.array([110.0, 80.0, 100.0, 60.0])
    # errors -10, 0, 20, -10: MAE 10, RMSE sqrt((100 + 0 + 400 + 100) / 4) = sqrt(150), bias 0
    rule = compute.LiveQualityRule(min_rows=500, relative_margin=0.05)
    got = by_key(
        compute.regression_quality_figures(
            predictions, labels, expected_mae=9.0, expected_rmse=12.0, expected_bias=0.5, rule=rule
        )
    )
    assert got[("mae", "")].value == pytest.approx(10.0)
    assert got[("rmse", "")].value == pytest.approx(np.sqrt(150.0))
    assert got[("bias", "")].value == pytest.approx(0.0)
    assert got[("expected_mae", "")].value == 9.0
    assert got[("degraded", "")].state == "inconclusive"
    assert got[("degraded", "")].value is None
    assert "4 rows: too little evidence (needs 500)" in (got[("degraded", "")].detail or "")
    assert got[("mae_ci_low", "")].value is None
    assert set(m for m, _ in got) == set(compute.REGRESSION_QUALITY_METRICS)
    empty = compute.regression_quality_figures(
        np.array([np.nan]), np.array([1.0]), expected_mae=1.0, rule=rule
    )
    assert {f.state for f in empty} == {"no_data"}


def test_regression_degraded_rule_uses_the_mae_interval() -> None:
    rng = np.random.default_rng(4)
    labels = rng.gamma(9.0, 11.0, 2000)
    good = labels + rng.normal(0, 12.0, labels.size)  # MAE about 9.6
    rule = compute.LiveQualityRule(min_rows=500, relative_margin=0.05, seed=11)
    mae = float(np.mean(np.abs(good - labels)))
    fine = by_key(compute.regression_quality_figures(good, labels, expected_mae=mae, rule=rule))
    low, high = fine[("mae_ci_low", "")].value, fine[("mae_ci_high", "")].value
    assert low < mae < high and high - low < 0.2 * mae
    assert fine[("degraded", "")].value == 0.0 and fine[("degraded", "")].state == "ok"
    # A model whose errors doubled (noise sd 24) against the same expectation: degraded.
    bad = labels + rng.normal(0, 24.0, labels.size)
    worse = by_key(compute.regression_quality_figures(bad, labels, expected_mae=mae, rule=rule))
    assert worse[("degraded", "")].value == 1.0 and worse[("degraded", "")].state == "degraded"
    assert "CI [" in (worse[("degraded", "")].detail or "")
    again = by_key(compute.regression_quality_figures(good, labels, expected_mae=mae, rule=rule))
    assert again[("mae_ci_low", "")].value == low  # same rows and seed, same interval
    unknown = by_key(compute.regression_quality_figures(good, labels, expected_mae=None, rule=rule))
    assert unknown[("degraded", "")].state == "skipped"


def test_regression_kpis_with_baselines_by_hand() -> None:
    preds = pd.DataFrame({"booking_id": [1, 2, 3, 4], "score": [100.0, 80.0, 120.0, 50.0]})
    truth = pd.DataFrame(
        {
            "booking_id": [1, 2, 3, 4, 5],
            "rate": [110.0, 80.0, 100.0, 60.0, 70.0],
            "room_revenue": [220.0, 80.0, 300.0, 0.0, 70.0],
            "last_rate": [100.0, np.nan, 130.0, 60.0, 1.0],
        }
    )
    figures = compute.regression_kpi_figures(
        preds,
        truth,
        key="booking_id",
        label="rate",
        value="room_revenue",
        baselines={"last_rate": "last_rate"},
        training_median=90.0,
        unit="EUR",
    )
    got = {(f.metric, f.feature): f.value for f in figures}
    # errors -10, 0, 20, -10 on 4 joined rows (booking 5 has no prediction)
    assert got[("rows", "")] == 4
    assert got[("mae", "")] == pytest.approx(10.0)
    assert got[("bias", "")] == pytest.approx(0.0)
    # value-weighted: (10*220 + 0*80 + 20*300 + 10*0) / 600 = 8200 / 600
    assert got[("value_weighted_mae", "")] == pytest.approx(8200 / 600)
    assert got[("predicted_total", "")] == 350.0 and got[("realized_total", "")] == 350.0
    assert got[("value_total", "")] == 600.0
    # last_rate on rows 1, 3, 4 (row 2 missing): errors -10, 30, 0
    assert got[("baseline_mae", "last_rate")] == pytest.approx(40 / 3)
    assert got[("baseline_bias", "last_rate")] == pytest.approx(20 / 3)
    # training median 90: errors -20, 10, -10, 30
    assert got[("baseline_mae", "training_median")] == pytest.approx(17.5)
    assert got[("baseline_bias", "training_median")] == pytest.approx(2.5)
    sizes = {(f.metric, f.feature): f.sample_size for f in figures}
    assert sizes[("baseline_mae", "last_rate")] == 3
    none = compute.regression_kpi_figures(
        preds.iloc[:0], truth, key="booking_id", label="rate", value="room_revenue"
    )
    assert {f.state for f in none} == {"no_data"}


def test_parse_week() -> None:
    from datetime import date

    assert parse_week("1997-W21") == date(1997, 5, 19)
    assert parse_week("1997-05-19") == date(1997, 5, 19)
    for bad in ("1997-05-20", "May 1997", "1997-W99", "0001-W01", "0001-01-01", "9999-W52"):
        with pytest.raises(ConfigurationError):
            parse_week(bad)
    with pytest.raises(ConfigurationError, match="^--from 'garbage'"):
        parse_week("garbage", "--from")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"rg_mon_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_store_replaces_a_week_per_kind(store: sa.Engine) -> None:
    first = [
        Figure("data_drift", "drift_score", 0.2, "drift", "a", sample_size=10, reference_size=20),
        Figure("data_drift", "drift_share", 0.5, "drift"),
        Figure("kpi", "lift", None, "pending", detail="label not matured"),
    ]
    assert (
        replace_week(store, model_name="m", week="1997-05-19", model_version="3", figures=first)
        == 3
    )
    replace_week(
        store,
        model_name="m",
        week="1997-05-19",
        model_version="3",
        figures=[Figure("kpi", "lift", 2.5)],
    )
    rows = week_rows(store, "m", "1997-05-19")
    assert [(r["kind"], r["metric"], r["feature"], r["value"], r["state"]) for r in rows] == [
        ("data_drift", "drift_score", "a", 0.2, "drift"),
        ("data_drift", "drift_share", "", 0.5, "drift"),
        ("kpi", "lift", "", 2.5, "ok"),
    ]
    assert rows[0]["sample_size"] == 10 and rows[0]["reference_size"] == 20
    with pytest.raises(ValueError, match="duplicate"):
        replace_week(
            store, model_name="m", week="w", model_version=None, figures=[first[1], first[1]]
        )
    record_pipeline_run(
        store, dag_id="d", run_id="r1", state="failed", week="1997-W20", started_at=None
    )
    record_pipeline_run(
        store, dag_id="d", run_id="r1", state="success", week="1997-W20", started_at=None
    )
    with store.connect() as conn:
        states = conn.execute(sa.text("select state from pipeline_runs where run_id = 'r1'")).all()
    assert states == [("success",)]
    with pytest.raises(ValueError):
        record_pipeline_run(
            store, dag_id="d", run_id="r2", state="running", week=None, started_at=None
        )
