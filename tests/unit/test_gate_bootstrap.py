"""The vectorised paired bootstrap: equal to scikit-learn per resample, symmetric, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from domain.metrics import multiplicities, paired_bootstrap, resample_indices, weighted_metrics


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
