"""Task-type metrics, the ONE paired bootstrap, the ONE targeting rule and PSI.

The gate (:mod:`registry_guard.gate`), the live guard (:mod:`registry_guard.guard`), training and
monitoring all judge models with the functions of this module, so that a number means the same
thing wherever it is reported.

Paired percentile bootstrap
---------------------------
Challenger and champion are compared on the *same* rows (Efron & Tibshirani, *An Introduction to
the Bootstrap*, Chapman & Hall 1993, ch. 13 "Confidence intervals based on bootstrap percentiles";
the paired design follows ch. 7 on comparing two statistics computed on one sample). One resample
is a draw of ``n`` row indices with replacement (:func:`resample_indices`); both models are scored
on that same draw, and the statistic is ``metric(challenger) - metric(champion)`` (or, for the
regression's relative figures, ``(metric(challenger) - metric(champion)) / metric(champion)``).
The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the ``B`` statistics form
the confidence interval (:func:`percentile_ci`).

Vectorisation: the ``(B, n)`` index matrix becomes a ``(B, n)`` matrix of multiplicities (how often
each row is drawn, :func:`multiplicities`); a resample's metric equals the metric of the full sample
with those multiplicities as sample weights. Classification: rows are sorted by score once per
model, and average precision and ROC AUC of every resample come from cumulative sums of weighted
positives and negatives at the ends of tied-score groups — the same step-wise AP and trapezoidal AUC
as :func:`sklearn.metrics.average_precision_score` and :func:`sklearn.metrics.roc_auc_score`
(``tests/unit/test_gate_bootstrap.py`` checks the equality). Regression: MAE, RMSE and bias of every
resample are weighted means of the per-row errors (matrix products).

Point metrics on the full sample come from scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rollguard.usecase import TaskType

#: Metrics of a binary classifier computed for every bootstrap resample.
CLASSIFICATION_METRICS: tuple[str, ...] = ("average_precision", "roc_auc", "brier")
#: Metrics of a regressor computed for every bootstrap resample (label units).
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "bias")
#: Kept for readers of the old name: the classification metrics.
BOOTSTRAP_METRICS = CLASSIFICATION_METRICS
#: Share given to an empty PSI bin so that ``ln(q / p)`` stays finite (Yurdakul 2018).
PSI_EPSILON = 1e-4

#: Resamples processed at once; bounds memory at about ``_CHUNK * n * 8`` bytes per array.
_CHUNK = 100


# --- resampling ------------------------------------------------------------------------------------
def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """The bootstrap resample index matrix.

    Returns:
        shape ``(n_resamples, n)``, int64 row indices drawn uniformly with replacement from
        ``range(n)`` by ``numpy.random.default_rng(seed)`` (reproducible for a given seed).
    """
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def multiplicities(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each row is drawn in each resample.

    Args:
        indices: shape ``(B, k)``, row indices in ``range(n)``.

    Returns:
        shape ``(B, n)`` int32 counts; each row sums to ``k``.
    """
    b = indices.shape[0]
    flat = (indices + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    # int32 halves the memory traffic of the cumulative sums; counts never exceed k < 2**31.
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.int32)


def percentile_ci(d: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval ``[alpha/2, 1 - alpha/2]`` of the non-NaN entries of ``d`` (NaN, NaN
    when all are NaN)."""
    finite = d[~np.isnan(d)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# --- weighted metrics (one weighting per resample) -----------------------------------------------
def weighted_metrics(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict:
    """AP, ROC AUC, Brier score and prevalence for many weightings of one sample at once.

    Args:
        scores: shape ``(n,)``, probabilities.
        labels: shape ``(n,)``, 0/1.
        weights: shape ``(B, n)``, non-negative integer multiplicities (one row per resample).

    Returns:
        ``{"average_precision", "roc_auc", "brier", "prevalence"}``, each of shape ``(B,)``. AP is
        NaN for a resample without positives, AUC for one without positives or negatives (as
        scikit-learn would refuse them).
    """
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order].astype(bool)
    w = weights[:, order]
    n_all = weights.sum(axis=1).astype(np.float64)
    # Thresholds are the distinct scores (sklearn.metrics._ranking._binary_clf_curve): curves are
    # read at the last row of each group of tied scores. Only groups holding a positive change AP
    # (recall steps) and AUC (positives ranked above negatives), so the sums run over those alone.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:] - 1, s.size - 1]
    pos_rows = np.flatnonzero(y)
    group_of_pos = np.searchsorted(starts, pos_rows, side="right") - 1
    last = (
        np.flatnonzero(np.r_[group_of_pos[1:] != group_of_pos[:-1], True])
        if pos_rows.size
        else np.zeros(0, dtype=np.int64)
    )
    pos_groups = group_of_pos[last]
    rows_cum = np.cumsum(w, axis=1, dtype=np.int32)
    rows_to_end = rows_cum[:, ends[pos_groups]].astype(np.float64)
    before = starts[pos_groups] - 1
    rows_before = np.where(before >= 0, rows_cum[:, np.maximum(before, 0)], 0)
    tp_to_end = np.cumsum(w[:, pos_rows], axis=1, dtype=np.int32)[:, last].astype(np.float64)
    w_pos = np.diff(tp_to_end, axis=1, prepend=0.0)
    neg_in_group = rows_to_end - rows_before - w_pos
    pos = tp_to_end[:, -1] if pos_groups.size else np.zeros(w.shape[0])
    neg = n_all - pos
    fp_to_end = rows_to_end - tp_to_end
    precision = np.divide(
        tp_to_end, rows_to_end, out=np.zeros_like(tp_to_end), where=rows_to_end > 0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (w_pos * precision).sum(axis=1) / pos
        # AUC = P(score of a positive > score of a negative) + 0.5 P(tie) (Mann-Whitney), which
        # equals the trapezoidal area under the ROC curve.
        auc = (w_pos * (neg[:, None] - fp_to_end + 0.5 * neg_in_group)).sum(axis=1) / (pos * neg)
        brier = weights.astype(np.float64) @ ((scores - labels) ** 2) / n_all
        prevalence = pos / n_all
    ap = np.where(pos > 0, ap, np.nan)
    auc = np.where((pos > 0) & (neg > 0), auc, np.nan)
    return {"average_precision": ap, "roc_auc": auc, "brier": brier, "prevalence": prevalence}


def weighted_regression_metrics(
    predictions: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> dict:
    """MAE, RMSE and bias (``mean(pred - label)``) for many weightings of one sample at once.

    Args:
        predictions, labels: shape ``(n,)``, finite, in the label's unit.
        weights: shape ``(B, n)``, non-negative multiplicities.

    Returns:
        ``{"mae", "rmse", "bias"}``, each shape ``(B,)`` in the label's unit (NaN for an all-zero
        weighting).
    """
    err = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    w = weights.astype(np.float64)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = w @ np.abs(err) / total
        rmse = np.sqrt(w @ (err**2) / total)
        bias = w @ err / total
    return {"mae": mae, "rmse": rmse, "bias": bias}


# --- point metrics (full sample, scikit-learn) ---------------------------------------------------
def regression_bias(predictions: np.ndarray, labels: np.ndarray) -> float:
    """``mean(pred - label)`` in the label's unit: positive when the model over-predicts."""
    return float(np.mean(np.asarray(predictions, float) - np.asarray(labels, float)))


def classification_point_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AP, ROC AUC and Brier score of ``scores`` (probabilities) against 0/1 ``labels``."""
    # scikit-learn is not in the API image, which needs only the targeting rule of this module.
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {
        "average_precision": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "brier": float(brier_score_loss(labels, scores)),
    }


def regression_point_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and bias of ``predictions`` against ``labels`` (label units)."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    return {
        "mae": float(mean_absolute_error(labels, predictions)),
        "rmse": float(root_mean_squared_error(labels, predictions)),
        "bias": regression_bias(predictions, labels),
    }


# --- targeting (the ONE rule) --------------------------------------------------------------------
def targeted_mask(scores: np.ndarray, budget: float) -> np.ndarray:
    """Shape ``(n,)`` bool: the top ``budget`` share of rows by score, ``ceil(budget * n)`` rows
    (at least one when ``n > 0``), ties broken by row order. The rows the business acts on.

    Args:
        scores: shape ``(n,)``. budget: share in (0, 1].
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    k = math.ceil(budget * n)
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


#: The gate's historical name of :func:`targeted_mask`.
top_share_mask = targeted_mask


def lift_at_budget(scores: np.ndarray, labels: np.ndarray, budget: float) -> float:
    """Positive rate among the top ``budget`` share by score divided by the overall positive rate.

    Returns NaN when there are no positives.
    """
    base = float(np.mean(labels))
    if base == 0:
        return math.nan
    return float(np.mean(labels[targeted_mask(scores, budget)])) / base


def value_share_at_budget(scores: np.ndarray, values: np.ndarray, budget: float) -> float:
    """Share of all business value (the use case's money unit) from the top ``budget`` by score.

    Returns NaN when the total value is not positive.
    """
    total = float(np.sum(values))
    if total <= 0:
        return math.nan
    return float(np.sum(values[targeted_mask(scores, budget)])) / total


# --- the paired bootstrap ------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedComparison:
    """Paired-bootstrap comparison of one metric.

    Attributes:
        metric: the metric's name (``average_precision``, ``mae``, ``mae_relative``...).
        challenger, champion: the metric on the full sample (scikit-learn).
        difference: ``challenger - champion`` on the full sample; for ``*_relative`` metrics
            ``(challenger - champion) / champion``.
        ci_low, ci_high: percentile CI of the difference at the requested confidence.
        n_degenerate: resamples where the metric is undefined (left out of the quantiles).
    """

    metric: str
    challenger: float
    champion: float
    difference: float
    ci_low: float
    ci_high: float
    n_degenerate: int


def _check_shapes(challenger: np.ndarray, champion: np.ndarray, n: int) -> None:
    if challenger.shape != (n,) or champion.shape != (n,):
        raise ValueError(f"scores must have shape ({n},); got {challenger.shape}, {champion.shape}")


def _resampled(
    n: int,
    n_resamples: int,
    seed: int,
    stats: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Run ``stats`` on the multiplicity matrix of every chunk of resamples; concatenate."""
    indices = resample_indices(n, n_resamples, seed)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_resamples, _CHUNK):
        w = multiplicities(indices[start : start + _CHUNK], n)
        for key, value in stats(w).items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(value) for key, value in parts.items()}


def paired_bootstrap(
    challenger: np.ndarray,
    champion: np.ndarray,
    labels: np.ndarray,
    *,
    task: TaskType = TaskType.BINARY_CLASSIFICATION,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, PairedComparison]:
    """Paired percentile bootstrap of ``metric(challenger) - metric(champion)``.

    Both score vectors are evaluated on the same resamples (Efron & Tibshirani 1993, ch. 13).
    Swapping ``challenger`` and ``champion`` negates every absolute difference and mirrors its CI.

    Args:
        challenger, champion: shape ``(n,)`` scores on the same rows (probabilities for binary
            classification, predicted label values for regression).
        labels: shape ``(n,)``: 0/1, or the regression label (same unit as the scores).
        task: which metrics.
        n_resamples: number of resamples ``B``.
        seed: seed of :func:`resample_indices`.
        confidence: two-sided level of the percentile interval.

    Returns:
        Binary classification: one :class:`PairedComparison` per metric in
        :data:`CLASSIFICATION_METRICS`, plus ``"challenger_vs_base_rate"`` (AP of the challenger
        minus prevalence, the AP of random scores). Regression: one per metric in
        :data:`REGRESSION_METRICS` (absolute differences, label units), ``"abs_bias"``
        (``|bias(challenger)| - |bias(champion)|``), and ``"mae_relative"`` and
        ``"rmse_relative"`` (``(challenger - champion) / champion``; NaN in a resample where the
        champion's error is 0).

    Raises:
        ValueError: on mismatched shapes; for classification, when the labels hold one class.
    """
    challenger = np.asarray(challenger, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    if task is TaskType.REGRESSION:
        return _paired_regression(
            challenger,
            champion,
            np.asarray(labels, dtype=np.float64),
            n_resamples,
            seed,
            confidence,
        )
    return _paired_classification(
        challenger, champion, np.asarray(labels, dtype=np.int64), n_resamples, seed, confidence
    )


def _paired_classification(
    challenger: np.ndarray,
    champion: np.ndarray,
    labels: np.ndarray,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, PairedComparison]:
    n = labels.shape[0]
    _check_shapes(challenger, champion, n)
    if labels.min(initial=0) == labels.max(initial=0):
        raise ValueError("labels hold a single class; AP and AUC are undefined")

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        a = weighted_metrics(challenger, labels, w)
        b = weighted_metrics(champion, labels, w)
        out = {m: a[m] - b[m] for m in CLASSIFICATION_METRICS}
        out["challenger_vs_base_rate"] = a["average_precision"] - a["prevalence"]
        return out

    diffs = _resampled(n, n_resamples, seed, stats)
    point_a = classification_point_metrics(challenger, labels)
    point_b = classification_point_metrics(champion, labels)
    alpha = 1.0 - confidence
    out: dict[str, PairedComparison] = {}
    for m in CLASSIFICATION_METRICS:
        lo, hi = percentile_ci(diffs[m], alpha)
        ch, cp = point_a[m], point_b[m]
        out[m] = PairedComparison(m, ch, cp, ch - cp, lo, hi, int(np.isnan(diffs[m]).sum()))
    d = diffs["challenger_vs_base_rate"]
    lo, hi = percentile_ci(d, alpha)
    prevalence = float(labels.mean())
    ap = point_a["average_precision"]
    out["challenger_vs_base_rate"] = PairedComparison(
        "challenger_vs_base_rate", ap, prevalence, ap - prevalence, lo, hi, int(np.isnan(d).sum())
    )
    return out


def _paired_regression(
    challenger: np.ndarray,
    champion: np.ndarray,
    labels: np.ndarray,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, PairedComparison]:
    n = labels.shape[0]
    _check_shapes(challenger, champion, n)
    if n == 0:
        raise ValueError("no rows to compare")

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        a = weighted_regression_metrics(challenger, labels, w)
        b = weighted_regression_metrics(champion, labels, w)
        out = {m: a[m] - b[m] for m in REGRESSION_METRICS}
        out["abs_bias"] = np.abs(a["bias"]) - np.abs(b["bias"])
        with np.errstate(invalid="ignore", divide="ignore"):
            for m in ("mae", "rmse"):
                out[f"{m}_relative"] = np.where(b[m] > 0, (a[m] - b[m]) / b[m], np.nan)
        return out

    diffs = _resampled(n, n_resamples, seed, stats)
    point_a = regression_point_metrics(challenger, labels)
    point_b = regression_point_metrics(champion, labels)
    point_a["abs_bias"], point_b["abs_bias"] = abs(point_a["bias"]), abs(point_b["bias"])
    alpha = 1.0 - confidence
    out: dict[str, PairedComparison] = {}
    for m in (*REGRESSION_METRICS, "abs_bias"):
        lo, hi = percentile_ci(diffs[m], alpha)
        ch, cp = point_a[m], point_b[m]
        out[m] = PairedComparison(m, ch, cp, ch - cp, lo, hi, int(np.isnan(diffs[m]).sum()))
    for m in ("mae", "rmse"):
        d = diffs[f"{m}_relative"]
        lo, hi = percentile_ci(d, alpha)
        ch, cp = point_a[m], point_b[m]
        rel = (ch - cp) / cp if cp > 0 else math.nan
        out[f"{m}_relative"] = PairedComparison(
            f"{m}_relative", ch, cp, rel, lo, hi, int(np.isnan(d).sum())
        )
    return out


# --- population stability index ------------------------------------------------------------------
def population_stability_index(
    reference: np.ndarray, live: np.ndarray, *, bins: int = 10, epsilon: float = PSI_EPSILON
) -> float:
    """PSI of ``live`` against ``reference`` over quantile bins of ``reference``.

    ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)``, ``p_i`` the reference share and ``q_i`` the live
    share of bin ``i`` (Siddiqi, N., *Credit Risk Scorecards*, Wiley 2006, ch. 8; Yurdakul, B.,
    *Statistical Properties of Population Stability Index*, Western Michigan University 2018).
    Bin edges are the ``k / bins`` quantiles of ``reference`` (deciles by default), with the outer
    edges opened to ``-inf`` and ``+inf`` so that live values outside the reference range count;
    tied quantiles (a reference with many equal values) merge their bins. Shares below ``epsilon``
    are raised to ``epsilon``. Works for probabilities and for predicted values in any unit (the
    bins are quantiles, so the unit cancels).

    Args:
        reference: shape ``(n,)``, reference scores, ``n >= 1``, finite.
        live: shape ``(m,)``, live scores, ``m >= 1``, finite.
        bins: number of quantile bins (>= 2).
        epsilon: floor of a bin's share, > 0.

    Returns:
        PSI >= 0 (0 for identical samples; > 0.25 is a significant shift by Siddiqi's rule).

    Raises:
        ValueError: on an empty or non-finite input, ``bins < 2`` or ``epsilon <= 0``.
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    live = np.asarray(live, dtype=np.float64).ravel()
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, not {epsilon}")
    for name, arr in (("reference", reference), ("live", live)):
        if arr.size == 0:
            raise ValueError(f"{name} scores are empty")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} scores hold NaN or infinite values")
    inner, p = reference_bins(reference, bins)
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    q = np.histogram(live, edges)[0] / live.size
    return psi_from_shares(p, q, epsilon=epsilon)


def reference_bins(reference: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The bins :func:`population_stability_index` compares in: inner edges and shares.

    Args:
        reference: shape ``(n,)``, finite, ``n >= 1``.
        bins: number of quantile bins (>= 2).

    Returns:
        ``(inner, shares)``: the unique ``k / bins`` quantiles of ``reference`` (``<= bins - 1``
        edges, increasing; tied quantiles merge their bins), and the share of ``reference`` in
        each of the ``len(inner) + 1`` bins ``[-inf, inner[0]), ..., [inner[-1], +inf]``.

    Raises:
        ValueError: empty or non-finite ``reference``, ``bins < 2``.
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    if reference.size == 0 or not np.isfinite(reference).all():
        raise ValueError("reference values must be non-empty and finite")
    inner = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    return inner, np.histogram(reference, edges)[0] / reference.size


def psi_from_shares(p: np.ndarray, q: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """PSI of live shares ``q`` against reference shares ``p`` over the same bins (the formula of
    :func:`population_stability_index`; shares below ``epsilon`` are raised to it).

    Args:
        p, q: shape ``(k,)`` each, shares (non-negative; each sums to 1 up to rounding).

    Raises:
        ValueError: shapes differ or ``epsilon <= 0``.
    """
    p = np.maximum(np.asarray(p, dtype=np.float64), epsilon)
    q = np.maximum(np.asarray(q, dtype=np.float64), epsilon)
    if p.shape != q.shape:
        raise ValueError(f"reference shares {p.shape} and live shares {q.shape} differ in shape")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, not {epsilon}")
    # Each term is >= 0 (q - p and ln(q / p) share their sign), so the sum is too.
    return float(np.sum((q - p) * np.log(q / p)))
