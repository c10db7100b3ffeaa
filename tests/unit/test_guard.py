"""The live guard's pure core: the Population Stability Index and the guard's states."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import expit, logit

from registry_guard.guard import (
    GuardCheck,
    evaluate_guard,
    gate_cutoffs,
    guard_state,
    population_stability_index,
)
from registry_guard.policy import (
    DEFAULT_POLICY_PATH,
    GatePolicy,
    GuardPolicy,
    load_guard_policy,
    load_policy,
)
from rollguard.errors import ConfigurationError
from rollguard.usecase import TaskType

GATE = GatePolicy()
GUARD = GuardPolicy()


def scores(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return expit(rng.normal(-2.0 + shift, 1.0, n))


# --- PSI -------------------------------------------------------------------------------------------
def test_psi_of_the_same_distribution_is_about_zero() -> None:
    ref = scores(20_000, 1)
    assert population_stability_index(ref, ref) == 0.0
    # Two samples of one distribution stay far below Siddiqi's "no shift" limit of 0.10.
    assert population_stability_index(ref, scores(20_000, 2)) < 0.01


def test_psi_of_a_collapsed_distribution_exceeds_the_threshold() -> None:
    ref = scores(20_000, 1)
    collapsed = np.full(5_000, float(np.median(ref)))  # a model that outputs one constant
    assert population_stability_index(ref, collapsed) > GUARD.psi_threshold
    shifted = scores(20_000, 3, shift=1.5)  # a broken feature path pushing every score up
    assert population_stability_index(ref, shifted) > GUARD.psi_threshold


def test_psi_counts_live_scores_outside_the_reference_range() -> None:
    ref = np.linspace(0.1, 0.2, 1000)
    assert population_stability_index(ref, np.full(1000, 0.9)) > 1.0


def test_psi_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        population_stability_index(np.zeros(0), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        population_stability_index(np.ones(3), np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="bins"):
        population_stability_index(np.ones(3), np.ones(3), bins=1)


unit_floats = st.floats(0.0, 1.0, allow_nan=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    ref=arrays(np.float64, st.integers(1, 300), elements=unit_floats),
    live=arrays(np.float64, st.integers(1, 300), elements=unit_floats),
    bins=st.integers(2, 20),
)
def test_psi_is_non_negative_and_zero_on_the_same_sample(ref, live, bins) -> None:
    assert population_stability_index(ref, live, bins=bins) >= 0.0
    assert population_stability_index(ref, ref, bins=bins) == pytest.approx(0.0, abs=1e-12)


# --- evaluate_guard --------------------------------------------------------------------------------
def realized(n: int = 8000, seed: int = 5, champion_noise: float = 1.0, prev_noise: float = 1.0):
    """Labels and two score vectors whose quality falls with their noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.12).astype(int)
    signal = 2.0 * y - 2.5
    champ = expit(signal + rng.normal(0, champion_noise, n))
    prev = expit(signal + rng.normal(0, prev_noise, n))
    return champ, prev, y


def guard(**kw):
    base = dict(
        live_scores=None,
        reference_scores=None,
        champion_scores=None,
        previous_scores=None,
        labels=None,
        gate_policy=GATE,
        guard_policy=GUARD,
    )
    return evaluate_guard(**{**base, **kw})


def test_stable_scores_and_equal_quality_are_ok() -> None:
    champ, prev, y = realized()
    report = guard(
        live_scores=scores(5000, 11),
        reference_scores=scores(20_000, 12),
        champion_scores=champ,
        previous_scores=champ.copy(),
        labels=y,
    )
    assert report.state == "ok"
    assert report.check("score_shift").verdict == "ok"
    rq = report.check("realized_quality")
    assert rq.verdict == "ok" and rq.ci_low == rq.ci_high == 0.0
    assert len(report.reasons) == 2 and report.to_json()


def test_a_large_shift_is_degraded_even_when_quality_is_unknown() -> None:
    report = guard(
        live_scores=np.full(3000, 0.08),
        reference_scores=scores(20_000, 12),
        realized_skip_reason="labels have not matured",
    )
    assert report.state == "degraded"
    shift = report.check("score_shift")
    assert shift.verdict == "degraded" and shift.value > GUARD.psi_threshold
    assert report.check("realized_quality").verdict == "skip"
    assert "not matured" in report.check("realized_quality").detail


def test_nan_live_scores_are_a_broken_path() -> None:
    live = scores(2000, 1)
    live[:100] = np.nan
    report = guard(live_scores=live, reference_scores=scores(2000, 2))
    assert report.state == "degraded" and "NaN" in report.check("score_shift").detail


def test_too_few_predictions_is_inconclusive_not_a_pass() -> None:
    report = guard(live_scores=np.full(50, 0.9), reference_scores=scores(20_000, 12))
    shift = report.check("score_shift")
    assert shift.verdict == "inconclusive" and shift.n_rows == 50
    assert report.state == "inconclusive"


def test_realized_quality_clearly_worse_is_degraded() -> None:
    champ, prev, y = realized(champion_noise=3.0, prev_noise=0.5)
    report = guard(champion_scores=champ, previous_scores=prev, labels=y)
    rq = report.check("realized_quality")
    assert rq.verdict == "degraded" and rq.ci_high < -GATE.classification.non_inferiority_margin
    assert report.state == "degraded"


def test_realized_quality_with_too_little_evidence_is_inconclusive() -> None:
    champ, prev, y = realized(n=600)
    report = guard(champion_scores=champ, previous_scores=prev, labels=y)
    rq = report.check("realized_quality")
    assert rq.verdict == "inconclusive" and "too little evidence" in rq.detail
    assert report.state == "inconclusive"


def test_realized_quality_with_an_ambiguous_ci_is_inconclusive() -> None:
    # The previous model's scores with a little noise added: slightly worse, and the CI straddles
    # -margin, so neither ok nor degraded can be claimed.
    _, prev, y = realized(n=3000, seed=9)
    champ = expit(logit(prev) + np.random.default_rng(3).normal(0, 0.2, prev.size))
    report = guard(champion_scores=champ, previous_scores=prev, labels=y)
    rq = report.check("realized_quality")
    assert rq.ci_low < -GATE.classification.non_inferiority_margin < rq.ci_high
    assert rq.verdict == "inconclusive" and report.state == "inconclusive"


def test_nothing_to_check_is_inconclusive() -> None:
    report = guard(shift_skip_reason="no predictions", realized_skip_reason="no previous champion")
    assert report.state == "inconclusive"
    assert [c.verdict for c in report.checks] == ["skip", "skip"]
    assert "no previous champion" in report.reasons[1]


def test_realized_shapes_must_agree() -> None:
    champ, prev, y = realized()
    with pytest.raises(ValueError, match="shape"):
        guard(champion_scores=champ, previous_scores=prev[:-1], labels=y)


# --- policy ----------------------------------------------------------------------------------------
def test_guard_policy_defaults_and_gate_keys_still_load() -> None:
    assert load_guard_policy() == GuardPolicy()
    assert load_guard_policy(DEFAULT_POLICY_PATH).psi_threshold == 1.0
    assert load_policy() == GatePolicy()


def test_a_bad_guard_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("classification:\n  min_rows: 100\nguard:\n  psi_treshold: 0.3\n")
    for loader in (load_guard_policy, load_policy):
        with pytest.raises(ConfigurationError, match=r"guard\.psi_treshold"):
            loader(path)
    path.write_text("guard:\n  psi_bins: 1\n")
    with pytest.raises(ConfigurationError, match=r"guard\.psi_bins"):
        load_guard_policy(path)
    path.write_text("guard: 3\n")
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        load_guard_policy(path)
    path.write_text("classification:\n  min_rows: 100\n")  # no guard section: defaults
    assert load_guard_policy(path) == GuardPolicy()
    assert load_policy(path).classification.min_rows == 100


# --- regression --------------------------------------------------------------------------------------
def realized_rates(n: int = 1500, seed: int = 5, champion_sd: float = 10.0, prev_sd: float = 10.0):
    """Nightly rates (EUR) and two prediction vectors whose error grows with their sd."""
    rng = np.random.default_rng(seed)
    y = rng.gamma(4.0, 25.0, n)
    return y + rng.normal(0, champion_sd, n), y + rng.normal(0, prev_sd, n), y


def reg_guard(**kw):
    return guard(task=TaskType.REGRESSION, unit="EUR", **kw)


def test_regression_realized_quality_ok_degraded_and_inconclusive() -> None:
    champ, prev, y = realized_rates()
    ok = reg_guard(champion_scores=champ, previous_scores=champ.copy(), labels=y)
    rq = ok.check("realized_quality")
    assert rq.verdict == "ok" and rq.ci_low == rq.ci_high == 0.0 and ok.state == "ok"
    assert rq.n_positives is None and "EUR" in rq.detail
    champ, prev, y = realized_rates(champion_sd=40.0, prev_sd=10.0)  # MAE about 4x the previous
    bad = reg_guard(champion_scores=champ, previous_scores=prev, labels=y)
    rq = bad.check("realized_quality")
    assert rq.verdict == "degraded" and rq.ci_low > GATE.regression.relative_margin
    assert bad.state == "degraded"
    few = reg_guard(champion_scores=champ[:300], previous_scores=prev[:300], labels=y[:300])
    rq = few.check("realized_quality")
    assert rq.verdict == "inconclusive" and "too little evidence" in rq.detail
    assert few.state == "inconclusive"


def test_regression_ambiguous_realized_quality_is_inconclusive() -> None:
    # 6% worse on average, on few rows: the CI straddles the 5% margin
    champ, prev, y = realized_rates(n=600, seed=2, champion_sd=10.6, prev_sd=10.0)
    rq = reg_guard(champion_scores=champ, previous_scores=prev, labels=y).check("realized_quality")
    assert rq.ci_low < GATE.regression.relative_margin < rq.ci_high
    assert rq.verdict == "inconclusive"


def test_regression_score_shift_uses_quantile_bins_of_predicted_values() -> None:
    rng = np.random.default_rng(0)
    reference = rng.gamma(4.0, 25.0, 5000)  # gate-time predictions, EUR
    same = reg_guard(live_scores=rng.gamma(4.0, 25.0, 2000), reference_scores=reference)
    assert same.check("score_shift").verdict == "ok"
    broken = reg_guard(live_scores=np.full(2000, 80.0), reference_scores=reference)
    assert broken.check("score_shift").verdict == "degraded" and broken.state == "degraded"


def test_guard_state_is_the_one_degraded_rule() -> None:
    def c(verdict: str) -> GuardCheck:
        return GuardCheck("x", verdict, "rule")  # type: ignore[arg-type]

    assert guard_state([c("ok"), c("degraded")]) == "degraded"
    assert guard_state([c("ok"), c("inconclusive")]) == "ok"
    assert guard_state([c("skip"), c("inconclusive")]) == "inconclusive"
    assert guard_state([]) == "inconclusive"


def test_gate_cutoffs_read_a_pooled_or_single_tag() -> None:
    assert gate_cutoffs("2017-08-21,2017-08-14, 2017-08-28") == (
        date(2017, 8, 14),
        date(2017, 8, 21),
        date(2017, 8, 28),
    )
    assert gate_cutoffs("1998-04-06") == (date(1998, 4, 6),)
    assert gate_cutoffs(None) == gate_cutoffs("") == ()


def test_live_shift_check_acts_only_on_a_finite_shift_of_a_never_gated_version() -> None:
    import math

    import numpy as np

    from domain.live_profile import score_reference
    from registry_guard.guard import LiveShiftEvidence, live_shift_check
    from registry_guard.policy import GuardPolicy

    gated = score_reference(np.linspace(0.0, 1.0, 100), version="2")
    replaced = gated.as_replaced()
    policy = GuardPolicy()

    def verdict(psi: float | None, rows: int, ref=replaced) -> str:  # type: ignore[no-untyped-def]
        return live_shift_check(LiveShiftEvidence("3", psi, rows, ref), policy).verdict

    assert verdict(4.5, 2000) == "degraded"
    assert verdict(4.5, 2000, gated) == "inconclusive"
    assert verdict(0.2, 2000) == "ok"
    assert verdict(4.5, 100) == "inconclusive"
    assert verdict(math.nan, 2000) == "skip"
    assert verdict(None, 2000) == "skip"
    assert verdict(4.5, 2000, None) == "skip"
