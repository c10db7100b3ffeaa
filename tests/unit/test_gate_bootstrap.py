"""The vectorised paired bootstrap (domain.metrics): equal to scikit-learn per resample, symmetric,
reproducible, for both task types; and the one targeting rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from domain import scoring
from domain.metrics import (
    multiplicities,
    paired_bootstrap,
    resample_indices,
    targeted_mask,
    weighted_metrics,
    weighted_regression_metrics,
)
from rollguard.usecase import TaskType


@pytest.mark.parametrize("decimals", [None, 2, 1])  # None: continuous scores; else many ties
def test_vectorised_metrics_equal_sklearn_on_each_resample(decimals: int | None) -> None:
    rng = np.random.default_rng(3)
    n = 1500
    y = (rng.random(n) < 0.2).astype(int)
    s = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1)
    if decimals is not None:
        s = np.round(s, decimals)
    idx = resample_indices(n, 40, seed=11)
    got = weighted_metrics(s, y, multiplicities(idx, n))
    for b in range(idx.shape[0]):
        yb, sb = y[idx[b]], s[idx[b]]
        assert got["average_precision"][b] == pytest.approx(
            average_precision_score(yb, sb), abs=1e-12
        )
        assert got["roc_auc"][b] == pytest.approx(roc_auc_score(yb, sb), abs=1e-12)
        assert got["brier"][b] == pytest.approx(brier_score_loss(yb, sb), abs=1e-12)
        assert got["prevalence"][b] == pytest.approx(yb.mean(), abs=1e-12)


def test_resample_without_positives_is_undefined_not_zero() -> None:
    y = np.array([0, 0, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9])
    w = np.array([[2, 1, 1, 0], [1, 1, 1, 1]])
    got = weighted_metrics(s, y, w)
    assert np.isnan(got["average_precision"][0]) and np.isnan(got["roc_auc"][0])
    assert got["average_precision"][1] == pytest.approx(1.0)


def test_multiplicities_count_draws() -> None:
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    assert multiplicities(idx, 3).tolist() == [[2, 0, 1], [0, 1, 2]]


def test_same_seed_same_interval() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    a, b = rng.random(500), rng.random(500)
    first = paired_bootstrap(a, b, y, n_resamples=1000, seed=5)
    assert first == paired_bootstrap(a, b, y, n_resamples=1000, seed=5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(20, 300),
    prevalence=st.floats(0.05, 0.6),
    ties=st.booleans(),
)
def test_swapping_models_negates_the_interval(
    seed: int, n: int, prevalence: float, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[0], y[1] = 0, 1  # both classes present
    a = rng.random(n)
    b = np.clip(a * 0.5 + rng.random(n) * 0.5, 0, 1)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    ab = paired_bootstrap(a, b, y, n_resamples=1000, seed=seed)
    ba = paired_bootstrap(b, a, y, n_resamples=1000, seed=seed)
    for metric in ("average_precision", "roc_auc", "brier"):
        assert ab[metric].difference == pytest.approx(-ba[metric].difference, abs=1e-12)
        assert ab[metric].ci_low == pytest.approx(-ba[metric].ci_high, abs=1e-9)
        assert ab[metric].ci_high == pytest.approx(-ba[metric].ci_low, abs=1e-9)
        assert ab[metric].n_degenerate == ba[metric].n_degenerate


# --- regression --------------------------------------------------------------------------------------
def test_weighted_regression_metrics_equal_sklearn_on_each_resample() -> None:
    rng = np.random.default_rng(4)
    n = 700
    y = rng.gamma(4.0, 25.0, n)
    pred = y + rng.normal(2.0, 15.0, n)
    idx = resample_indices(n, 30, seed=9)
    got = weighted_regression_metrics(pred, y, multiplicities(idx, n))
    for b in range(idx.shape[0]):
        yb, pb = y[idx[b]], pred[idx[b]]
        assert got["mae"][b] == pytest.approx(mean_absolute_error(yb, pb), rel=1e-12)
        assert got["rmse"][b] == pytest.approx(root_mean_squared_error(yb, pb), rel=1e-12)
        assert got["bias"][b] == pytest.approx(float(np.mean(pb - yb)), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(5, 300), scale=st.floats(0.1, 500.0))
def test_swapping_regression_models_negates_the_interval(seed: int, n: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(100.0, scale, n)
    a = y + rng.normal(0.0, scale / 2, n)
    b = y + rng.normal(1.0, scale, n)
    ab = paired_bootstrap(a, b, y, task=TaskType.REGRESSION, n_resamples=1000, seed=seed)
    ba = paired_bootstrap(b, a, y, task=TaskType.REGRESSION, n_resamples=1000, seed=seed)
    for metric in ("mae", "rmse", "bias", "abs_bias"):
        tol = 1e-9 * max(1.0, scale)
        assert ab[metric].difference == pytest.approx(-ba[metric].difference, abs=tol)
        assert ab[metric].ci_low == pytest.approx(-ba[metric].ci_high, abs=tol)
        assert ab[metric].ci_high == pytest.approx(-ba[metric].ci_low, abs=tol)


def test_relative_mae_interval_brackets_the_point_and_identical_models_give_zero() -> None:
    rng = np.random.default_rng(1)
    y = rng.gamma(4.0, 25.0, 800)
    a, b = y + rng.normal(0, 10, 800), y + rng.normal(0, 12, 800)
    rel = paired_bootstrap(a, b, y, task=TaskType.REGRESSION, n_resamples=1000, seed=3)
    point = rel["mae_relative"]
    assert point.difference == pytest.approx(
        mean_absolute_error(y, a) / mean_absolute_error(y, b) - 1
    )
    assert point.ci_low < point.difference < point.ci_high
    same = paired_bootstrap(a, a.copy(), y, task=TaskType.REGRESSION, n_resamples=1000, seed=3)
    assert same["mae_relative"].ci_low == same["mae_relative"].ci_high == 0.0


def test_one_targeting_rule() -> None:
    assert scoring.targeted_mask is targeted_mask
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert targeted_mask(s, 0.4).tolist() == [False, True, False, True, False]
    assert targeted_mask(s, 0.01).sum() == 1  # ceil(budget * n), ties broken by row order
    assert targeted_mask(s, 0.01).tolist() == [False, True, False, False, False]
    assert targeted_mask(np.zeros(0), 0.1).size == 0
