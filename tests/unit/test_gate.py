"""The gate's decisions on synthetic evaluation sets with a known truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from registry_guard.gate import ChampionUnavailable, ModelEvidence, evaluate_gate
from registry_guard.policy import (
    DEFAULT_POLICY_PATH,
    GatePolicy,
    RegressionGatePolicy,
    load_policy,
)
from rollguard.errors import ConfigurationError
from rollguard.usecase import LabelSpec, TaskType

FEATURES = ("recency_days", "frequency", "monetary_total")
POLICY = GatePolicy()


def population(
    n: int, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, revenue, returning mask, per-slice logit offset and a noise vector."""
    rng = np.random.default_rng(seed)
    returning = rng.random(n) < 0.5
    y = (rng.random(n) < np.where(returning, 0.35, 0.10)).astype(int)
    revenue = y * rng.gamma(2.0, 30.0, n)
    offset = np.where(returning, -0.6, -2.2)
    return y, revenue, returning, offset, rng.normal(0, 1, n)


def model(scores: np.ndarray, version: str, **kw: object) -> ModelEvidence:
    return ModelEvidence(scores=scores, version=version, feature_names=FEATURES, **kw)  # type: ignore[arg-type]


def gate(
    chal: ModelEvidence,
    champ: ModelEvidence | ChampionUnavailable | None,
    y,
    rev,
    ret,
    policy: GatePolicy = POLICY,
):
    slices = {"customer_type": np.where(ret, "returning", "new")}
    return evaluate_gate(
        chal,
        champ,
        y,
        rev,
        slices,
        policy,
        task=TaskType.BINARY_CLASSIFICATION,
        expected_features=FEATURES,
    )


@pytest.fixture(scope="module")
def data():
    return population(8000)


def test_no_champion_bootstraps(data) -> None:
    y, rev, ret, off, z = data
    d = gate(model(expit(off + 1.5 * y + z), "1"), None, y, rev, ret)
    assert d.outcome == "bootstrap" and d.reason_code == "no_champion" and d.passed
    assert d.check("better_than_random").verdict == "pass"


def test_identical_models_are_non_inferior(data) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    d = gate(model(s.copy(), "2"), model(s, "1"), y, rev, ret)
    assert d.outcome == "promote", d.reasons
    primary = d.check("primary_non_inferiority")
    assert primary.value == 0 and primary.ci_low == 0 and primary.ci_high == 0


def test_clearly_better_challenger_is_promoted(data) -> None:
    y, rev, ret, off, z = data
    d = gate(
        model(expit(off + 3.0 * y + 0.6 * z), "2"),
        model(expit(off + 1.0 * y + z), "1"),
        y,
        rev,
        ret,
    )
    assert d.outcome == "promote" and d.reason_code == "non_inferior"
    assert d.check("primary_non_inferiority").ci_low > 0
    assert {c.name: c.verdict for c in d.checks}["slice_new"] == "pass"


def test_clearly_worse_challenger_is_rejected(data) -> None:
    y, rev, ret, off, z = data
    d = gate(
        model(expit(off + 1.0 * y + z), "2"),
        model(expit(off + 3.0 * y + 0.6 * z), "1"),
        y,
        rev,
        ret,
    )
    assert d.outcome == "reject" and d.reason_code == "inferior"
    assert d.check("primary_non_inferiority").ci_high < 0
    assert any("average_precision may be worse" in r for r in d.reasons)


def test_noisy_challenger_on_small_set_is_rejected_for_lack_of_evidence() -> None:
    y, rev, ret, off, z = population(600, seed=3)
    noisy = expit(off + 1.5 * y + z + np.random.default_rng(1).normal(0, 2, y.size))
    d = gate(model(noisy, "2"), model(expit(off + 1.5 * y + z), "1"), y, rev, ret)
    assert d.outcome == "reject" and d.reason_code == "insufficient_evidence"
    assert "not enough evidence" in d.reasons[0]
    # without a champion as well: thin evidence is never a promotion
    assert gate(model(noisy, "2"), None, y, rev, ret).outcome == "reject"


def test_slice_regression_blocks_a_total_improvement(data) -> None:
    y, rev, ret, off, z = data
    champ = expit(off + 1.5 * y + z)
    chal = np.where(ret, expit(off + 3.0 * y + 0.5 * z), expit(off + 1.1 * y + z))
    d = gate(model(chal, "2"), model(champ, "1"), y, rev, ret)
    assert d.check("primary_non_inferiority").ci_low > 0  # the total improves ...
    assert d.check("slice_new").verdict == "fail"  # ... but new customers get worse
    assert d.check("slice_returning").verdict == "pass"
    assert d.outcome == "reject" and d.reason_code == "slice_regressed"


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (1.5, "out-of-range")])
def test_invalid_challenger_scores_are_rejected(data, bad: float, word: str) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    s[10] = bad
    d = gate(model(s, "2"), model(expit(off + 1.5 * y + z), "1"), y, rev, ret)
    assert d.outcome == "reject" and d.reason_code == "invalid_scores"
    assert word in d.reasons[0]
    json.loads(d.to_json())  # strict JSON even with NaN inputs


def test_unloadable_or_unscorable_champion_is_not_no_champion(data) -> None:
    y, rev, ret, off, z = data
    chal = model(expit(off + 1.5 * y + z), "2")
    d = gate(chal, ChampionUnavailable("1", "model file is corrupt"), y, rev, ret)
    assert d.outcome == "reject" and d.reason_code == "champion_unavailable"
    assert "model file is corrupt" in d.reasons[0]
    nan_champ = np.full(y.size, np.nan)
    d = gate(chal, model(nan_champ, "1"), y, rev, ret)
    assert d.reason_code == "champion_unavailable"


def test_incompatible_signature_is_rejected(data) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    chal = ModelEvidence(s, "2", feature_names=("recency_days", "frequency"))
    d = gate(chal, model(s, "1"), y, rev, ret)
    assert d.reason_code == "signature_mismatch" and "monetary_total" in d.reasons[0]
    assert gate(ModelEvidence(s, "2"), None, y, rev, ret).reason_code == "signature_mismatch"


def test_latency_and_size_guardrails(data) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    slow = gate(
        model(s, "2", latency_seconds_per_10k=0.9),
        model(s, "1", latency_seconds_per_10k=0.3),
        y,
        rev,
        ret,
    )
    assert slow.outcome == "reject" and slow.check("guardrail_latency").value == pytest.approx(3)
    # a 3x ratio of tiny times is timer noise, not a regression
    fast = gate(
        model(s, "2", latency_seconds_per_10k=0.003),
        model(s, "1", latency_seconds_per_10k=0.001),
        y,
        rev,
        ret,
    )
    assert fast.outcome == "promote"
    big = gate(model(s, "2", size_bytes=POLICY.max_model_bytes + 1), model(s, "1"), y, rev, ret)
    assert big.outcome == "reject" and big.reason_code == "model_too_large"


def test_lift_guardrail(data) -> None:
    y, rev, ret, off, z = data
    champ = expit(off + 1.5 * y + z)
    # same ranking below the top decile, but the top decile is shuffled to the bottom
    chal = champ.copy()
    top = champ >= np.quantile(champ, 0.9)
    chal[top] = chal[top] * 0.05
    d = gate(model(chal, "2"), model(champ, "1"), y, rev, ret)
    assert d.check("guardrail_lift").verdict == "fail" and d.outcome == "reject"


def test_report_renders(data) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    d = gate(model(s, "2"), model(s, "1"), y, rev, ret)
    doc = json.loads(d.to_json())
    assert doc["outcome"] == "promote" and len(doc["checks"]) == len(d.checks)
    md = d.to_markdown()
    assert "| primary_non_inferiority | pass |" in md


def test_default_policy_file_matches_the_documented_defaults() -> None:
    assert load_policy() == GatePolicy()
    assert load_policy(DEFAULT_POLICY_PATH).n_resamples >= 1000


def test_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("non_inferiority_margn: 0.02\n")
    with pytest.raises(ConfigurationError, match="non_inferiority_margn"):
        load_policy(path)
    path.write_text("n_resamples: 10\n")
    with pytest.raises(ConfigurationError, match="n_resamples"):
        load_policy(path)


# --- regression ----------------------------------------------------------------------------------
RATE = LabelSpec(column="rate", description="nightly rate", unit="EUR", minimum=0.0, maximum=1000.0)


def rates(n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nightly rates (EUR) driven by one feature and a segment, the room revenue per row, the
    segment label of a generic slice (``market``), and the driving feature."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(np.array(["city", "resort"]), n)
    x = rng.normal(0.0, 1.0, n)
    y = np.clip(
        100 + 30 * x + np.where(segment == "resort", 20.0, 0.0) + rng.normal(0, 8, n), 0, 1000
    )
    revenue = y * rng.integers(1, 6, n)
    return y, revenue, segment, x


def reg_gate(chal, champ, y, revenue, segment, policy: GatePolicy = POLICY, **slices):
    return evaluate_gate(
        model(chal, "2"),
        None if champ is None else model(champ, "1"),
        y,
        revenue,
        {"market": segment, **slices},
        policy,
        task=TaskType.REGRESSION,
        expected_features=FEATURES,
        label=RATE,
    )


@pytest.fixture(scope="module")
def hotel():
    return rates(3000)


def test_regression_better_model_is_promoted(hotel) -> None:
    y, revenue, segment, x = hotel
    noise = np.random.default_rng(2).normal(0, 1, y.size)
    champion = np.clip(100 + 30 * x + 25 * noise, 0, 1000)  # ignores the segment, noisy
    challenger = 100 + 30 * x + np.where(segment == "resort", 20.0, 0.0) + 4 * noise
    d = reg_gate(challenger, champion, y, revenue, segment)
    assert d.outcome == "promote" and d.reason_code == "non_inferior", d.reasons
    primary = d.check("primary_non_inferiority")
    assert primary.ci_high < 0 and primary.challenger < primary.champion
    assert "EUR" in primary.detail and d.unit == "EUR" and d.n_positives is None
    assert {d.check("slice_city").verdict, d.check("slice_resort").verdict} == {"pass"}
    assert d.check("guardrail_rmse").verdict == "pass"
    assert d.check("guardrail_bias").verdict == "pass"


def test_regression_shuffled_target_model_is_rejected_with_mae_ci_reasons(hotel) -> None:
    y, revenue, segment, x = hotel
    good = 100 + 30 * x + np.where(segment == "resort", 20.0, 0.0)
    # a model trained on shuffled targets: its predictions bear no relation to the rows
    shuffled = np.random.default_rng(4).permutation(good)
    d = reg_gate(shuffled, good, y, revenue, segment)
    # the first failed check names the code: not even better than the labels' median
    assert d.outcome == "reject" and d.reason_code == "worse_than_constant"
    primary = d.check("primary_non_inferiority")
    assert primary.verdict == "fail" and primary.ci_low > RegressionGatePolicy().relative_margin
    assert any(r.startswith("MAE may be worse by more than 5%") and "CI" in r for r in d.reasons)
    assert d.check("better_than_constant").verdict == "fail"
    # without a champion the same model is not credibly better than the labels' median
    alone = reg_gate(shuffled, None, y, revenue, segment)
    assert alone.outcome == "reject" and alone.reason_code == "worse_than_constant"
    assert reg_gate(good, None, y, revenue, segment).outcome == "bootstrap"


def test_regression_with_too_few_rows_is_insufficient_evidence() -> None:
    y, revenue, segment, x = rates(300, seed=5)
    good = 100 + 30 * x
    d = reg_gate(good, good + 5, y, revenue, segment)
    assert d.outcome == "reject" and d.reason_code == "insufficient_evidence"
    assert d.reasons[0] == ("not enough evidence: 300 rows; the policy needs at least 500 rows")
    assert reg_gate(good, None, y, revenue, segment).reason_code == "insufficient_evidence"


@pytest.mark.parametrize("error, outcome", [(10.4, "promote"), (10.6, "reject")])
def test_relative_margin_on_a_hand_example(error: float, outcome: str) -> None:
    """Champion errors are +-10 EUR on every row (MAE 10), the challenger's +-10.4 (MAE 10.4,
    relative +4%) or +-10.6 (+6%). Every resample has the same MAEs, so the CI is a point:
    +4% is under the 5% margin, +6% is not."""
    n = 600
    y = np.linspace(50.0, 350.0, n)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    segment = np.full(n, "all")
    d = reg_gate(y + error * sign, y + 10.0 * sign, y, y, segment)
    primary = d.check("primary_non_inferiority")
    expected = (error - 10.0) / 10.0
    assert primary.value == pytest.approx(expected)
    assert primary.ci_low == pytest.approx(expected) and primary.ci_high == pytest.approx(expected)
    assert (primary.challenger, primary.champion) == (pytest.approx(error), pytest.approx(10.0))
    assert d.outcome == outcome


def test_regression_scores_outside_the_label_bounds_or_infinite_are_invalid(hotel) -> None:
    y, revenue, segment, x = hotel
    good = 100 + 30 * x
    for bad, word in ((1500.0, "out-of-range"), (np.inf, "infinite"), (np.nan, "NaN")):
        s = good.copy()
        s[3] = bad
        d = reg_gate(s, good, y, revenue, segment)
        assert d.reason_code == "invalid_scores" and word in d.reasons[0], d.reasons


def test_regression_generic_slice_regression_blocks_a_total_improvement(hotel) -> None:
    y, revenue, segment, x = hotel
    noise = np.random.default_rng(8).normal(0, 1, y.size)
    resort = segment == "resort"
    truth = 100 + 30 * x + np.where(resort, 20.0, 0.0)
    champion = np.clip(truth + 12 * noise, 0, 1000)
    # much better on city rows, worse on resort rows
    challenger = np.clip(np.where(resort, truth + 16 * noise, truth + 2 * noise), 0, 1000)
    d = reg_gate(challenger, champion, y, revenue, segment)
    assert d.check("primary_non_inferiority").verdict == "pass"
    assert d.check("slice_city").verdict == "pass"
    assert d.check("slice_resort").verdict == "fail"
    assert d.outcome == "reject" and d.reason_code == "slice_regressed"
    assert any(r.startswith("slice market=resort: relative MAE difference") for r in d.reasons)


def test_bias_guardrail(hotel) -> None:
    y, revenue, segment, x = hotel
    truth = 100 + 30 * x + np.where(segment == "resort", 20.0, 0.0)
    # 1.5 EUR too high on every row: MAE barely moves, |bias| grows by more than 0.05 x MAE
    d = reg_gate(truth + 1.5, truth, y, revenue, segment)
    assert d.check("primary_non_inferiority").verdict == "pass"
    bias = d.check("guardrail_bias")
    assert bias.verdict == "fail" and bias.value > bias.threshold
    assert d.outcome == "reject" and d.reason_code == "guardrail_failed"


def test_segments_shared_by_two_slices_get_qualified_names(data) -> None:
    y, rev, ret, off, z = data
    s = expit(off + 1.5 * y + z)
    half = np.where(np.arange(y.size) < y.size // 2, "a", "b")
    d = evaluate_gate(
        model(s.copy(), "2"),
        model(s, "1"),
        y,
        rev,
        {"first": half, "second": half[::-1]},
        POLICY,
        task=TaskType.BINARY_CLASSIFICATION,
        expected_features=FEATURES,
    )
    names = [c.name for c in d.checks if c.name.startswith("slice_")]
    assert names == ["slice_first_a", "slice_first_b", "slice_second_a", "slice_second_b"]
    assert d.outcome == "promote"


def test_policy_sections_change_the_regression_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("regression:\n  relative_margin: 0.2\n  min_rows: 50\n")
    policy = load_policy(path)
    assert policy.regression.relative_margin == 0.2 and policy.regression.min_rows == 50
    assert policy.classification == GatePolicy().classification
    path.write_text("regression:\n  relative_margn: 0.2\n")
    with pytest.raises(ConfigurationError, match=r"regression\.relative_margn"):
        load_policy(path)


def test_hotel_gate_decides_on_mae_with_real_rows() -> None:
    """The hotel use case end to end through the gate's inputs: pooled evaluation cutoffs, an XGBoost
    regressor with native categoricals promotes over nothing, a model trained on shuffled targets is
    rejected with MAE confidence-interval reasons in EUR."""
    import xgboost as xgb

    from domain.evaluation import plan_cutoffs, stack_rows
    from registry_guard.registry import gate_inputs
    from rollguard.weeks import iso_week_label
    from usecases.hotel import USECASE as hotel_usecase

    records = hotel_usecase.load_history().records
    weeks = sorted({iso_week_label(d.date()) for d in records[hotel_usecase.record_time_column]})
    plan = plan_cutoffs(hotel_usecase, weeks, n_fit=12, n_validation=1)
    fit = stack_rows(hotel_usecase, records, plan.fit)
    inputs = gate_inputs(stack_rows(hotel_usecase, records, plan.evaluations), hotel_usecase)
    assert len(plan.evaluations) == hotel_usecase.evaluation_cutoffs
    assert inputs.labels.size >= RegressionGatePolicy().min_rows

    def predictions(target: np.ndarray) -> np.ndarray:
        model = xgb.XGBRegressor(
            n_estimators=60, max_depth=5, enable_categorical=True, nthread=2, random_state=1
        )
        model.fit(hotel_usecase.feature_frame(fit), target)
        return np.clip(model.predict(inputs.features).astype(np.float64), 0, 1000)

    y = fit[hotel_usecase.label.column].to_numpy(dtype=np.float64)
    good = predictions(y)
    shuffled = predictions(np.random.default_rng(0).permutation(y))
    names = hotel_usecase.feature_names

    def decide(chal: np.ndarray, champ: np.ndarray | None):
        return evaluate_gate(
            ModelEvidence(chal, "2", feature_names=names),
            None if champ is None else ModelEvidence(champ, "1", feature_names=names),
            inputs.labels,
            inputs.values,
            inputs.slices,
            POLICY,
            task=hotel_usecase.task,
            expected_features=names,
            label=hotel_usecase.label,
        )

    first = decide(good, None)
    assert first.outcome == "bootstrap", first.reasons
    broken = decide(shuffled, good)
    assert broken.outcome == "reject"
    primary = broken.check("primary_non_inferiority")
    assert primary.verdict == "fail" and primary.ci_low > 0.05 and "EUR" in primary.detail
    assert any(r.startswith("MAE may be worse") and "EUR" in r for r in broken.reasons)
