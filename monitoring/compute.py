"""Pure monitoring computations: frames and arrays in, :class:`Figure` rows out (no I/O).

Each function returns the figures of one ``kind`` of the ``monitoring_results`` table (see
``docs/monitoring.md`` and :class:`rollguard.db.models.MonitoringResult`), and never raises on the
edge cases a weekly run meets: an empty window is a ``no_data`` figure, an all-empty or constant
column is ``skipped`` with the reason, missing or extra columns are ``schema_mismatch`` naming them.

- Data drift: Evidently 0.7 ``Report([DataDriftPreset(columns=...)], include_tests=True)`` on the
  explicitly listed numerical feature columns. Evidently chooses each column's test and threshold
  (its documented defaults: Kolmogorov-Smirnov p-value below 0.05 up to 1,000 reference rows,
  normed Wasserstein distance at or above 0.1 beyond) and reports the per-column verdict as the
  status of its ``ValueDrift`` test; the dataset share is its ``DriftedColumnsCount``.
- Score drift: the Population Stability Index of :func:`registry_guard.guard.population_stability_index`
  (the live guard's own PSI, on every score, not sampled), Evidently's ``ValueDrift`` on the score
  column, and score quantiles.
- Quality: scikit-learn's average precision, ROC AUC and Brier score on matured labels, and the
  precision of the targeted rows.
- Business KPIs: the model's targeting against a random-targeting baseline, the expected values of
  a uniformly random pick of the same number of customers (see :func:`kpi_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: ``kind`` values of ``monitoring_results``.
DATA_DRIFT, SCORE_DRIFT, QUALITY, KPI, RUN = "data_drift", "score_drift", "quality", "kpi", "run"
#: Figures of kind ``quality`` (all written, value NULL when the state says there is none).
QUALITY_METRICS: tuple[str, ...] = (
    "average_precision",
    "roc_auc",
    "brier",
    "precision_at_budget",
    "expected_average_precision",
    "expected_roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "degraded",
)
#: Figures of kind ``kpi`` (model targeting, then the random-targeting baseline).
KPI_METRICS: tuple[str, ...] = (
    "targeted_customers",
    "targeted_repurchase_rate",
    "base_rate",
    "lift",
    "targeted_revenue_dollars",
    "targeted_revenue_share",
    "random_repurchase_rate",
    "random_revenue_dollars",
    "random_revenue_share",
    "random_lift",
)


@dataclass(frozen=True)
class Figure:
    """One row of ``monitoring_results`` without its key (model, week, version, time).

    ``value`` is None when ``state`` says there is no number (``no_data``, ``skipped``,
    ``schema_mismatch``, ``pending``); ``detail`` says why in words.
    """

    kind: str
    metric: str
    value: float | None
    state: str = "ok"
    feature: str = ""
    detail: str | None = None
    sample_size: int | None = None
    reference_size: int | None = None


def _num(value: Any) -> float | None:
    """A finite float, or None (NaN and infinities are stored as NULL)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def seeded_sample(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``: all of them when it is small enough, else a uniform
    sample without replacement drawn with ``numpy.random.default_rng(seed)`` (row order kept).
    The same frame, cap and seed always give the same sample."""
    if cap <= 0:
        raise ValueError(f"sample cap must be > 0, not {cap}")
    if len(frame) <= cap:
        return frame
    idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=cap, replace=False))
    return frame.iloc[idx]


def _unusable(ref: pd.Series, cur: pd.Series) -> str | None:
    """Why a column cannot be compared, or None: all empty on a side, or constant on a side."""
    for side, col in (("reference", ref), ("current", cur)):
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return f"all values empty (NaN/inf) in the {side} data"
        if np.all(finite == finite[0]):
            return f"constant in the {side} data (every value {finite[0]:g})"
    return None


@dataclass(frozen=True)
class DriftResult:
    """Figures of a drift computation and the Evidently snapshot behind them (None when Evidently
    did not run), for the HTML report."""

    figures: list[Figure]
    snapshot: Any | None
    drift_share: float | None
    drifted: tuple[str, ...]


def _evidently_drift(
    current: pd.DataFrame, reference: pd.DataFrame, columns: Sequence[str]
) -> tuple[Any, dict[str, tuple[float, bool, str]], float]:
    """Run Evidently's DataDriftPreset on ``columns`` (all numerical); returns the snapshot,
    ``{column: (score, drifted, method)}`` and the share of drifted columns."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = list(columns)
    definition = DataDefinition(numerical_columns=cols)
    snapshot = Report([DataDriftPreset(columns=cols)], include_tests=True).run(
        Dataset.from_pandas(current[cols].astype("float64"), data_definition=definition),
        Dataset.from_pandas(reference[cols].astype("float64"), data_definition=definition),
    )
    body = snapshot.dict()
    verdicts: dict[str, bool] = {}
    for test in body.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift"):
            verdicts[str(params["column"])] = test.get("status") == "FAIL"
    scores: dict[str, tuple[float, bool, str]] = {}
    share = None
    for metric in body["metrics"]:
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            column = str(config["column"])
            method = f"{config.get('method')} (threshold {config.get('threshold')})"
            scores[column] = (float(metric["value"]), verdicts.get(column, False), method)
    if share is None:
        raise RuntimeError("Evidently's DataDriftPreset returned no DriftedColumnsCount metric")
    return snapshot, scores, share


def data_drift_figures(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    sample_rows: int,
    seed: int,
) -> DriftResult:
    """Per-feature and dataset drift of ``current`` against ``reference`` on ``columns``.

    Args:
        reference: the champion's training rows (one row per customer and cutoff).
        current: this week's feature rows.
        columns: the features to compare (:data:`usecases.cdnow.features.FEATURE_COLUMNS`); other columns
            of the frames are ignored except as a ``schema_mismatch`` note when they are not keys.
        sample_rows: each side is sampled to at most this many rows (:func:`seeded_sample`).
        seed: sample seed (the reference uses ``seed``, the current side ``seed + 1``).

    Returns:
        Figures of kind ``data_drift``: per usable feature ``drift_score`` (Evidently's score; state
        ``drift`` or ``ok``) and ``drifted`` (0/1); per unusable feature both with state ``skipped``
        and the reason; per feature missing on a side both with state ``schema_mismatch``; dataset
        figures ``drift_share``, ``drifted_features``, ``n_features`` (usable features only, so a
        skipped column never raises the share), and ``schema`` (``schema_mismatch`` naming extra
        and missing columns, ``ok`` otherwise). An empty side gives ``no_data`` dataset figures.
    """
    cols = list(columns)
    key_like = {"customer_id", "cutoff", "repurchase", "revenue_horizon", "label_available"}
    missing = {
        side: [c for c in cols if c not in frame.columns]
        for side, frame in (("reference", reference), ("current", current))
    }
    extra = sorted(
        {c for f in (reference, current) for c in f.columns if c not in cols and c not in key_like}
    )
    figures: list[Figure] = []
    problems = []
    if missing["current"] or missing["reference"]:
        problems.append(
            "missing columns: "
            + "; ".join(f"{side}: {', '.join(m)}" for side, m in missing.items() if m)
        )
    if extra:
        problems.append(f"extra columns ignored: {', '.join(extra)}")
    figures.append(
        Figure(
            DATA_DRIFT,
            "schema",
            float(bool(problems)),
            "schema_mismatch" if problems else "ok",
            detail="; ".join(problems) or f"{len(cols)} expected feature columns present",
        )
    )
    absent = sorted(set(missing["current"]) | set(missing["reference"]))
    for column in absent:
        side = "current" if column in missing["current"] else "reference"
        for metric in ("drift_score", "drifted"):
            figures.append(
                Figure(
                    DATA_DRIFT,
                    metric,
                    None,
                    "schema_mismatch",
                    column,
                    f"column {column} missing from the {side} data",
                )
            )
    present = [c for c in cols if c not in absent]
    n_ref, n_cur = len(reference), len(current)
    if n_ref == 0 or n_cur == 0:
        empty = "current week" if n_cur == 0 else "reference"
        for metric in ("drift_share", "drifted_features", "n_features"):
            figures.append(
                Figure(
                    DATA_DRIFT,
                    metric,
                    None,
                    "no_data",
                    detail=f"no rows in the {empty} data",
                    sample_size=n_cur,
                    reference_size=n_ref,
                )
            )
        return DriftResult(figures, None, None, ())
    ref = seeded_sample(reference, sample_rows, seed)
    cur = seeded_sample(current, sample_rows, seed + 1)
    sizes = {"sample_size": len(cur), "reference_size": len(ref)}
    usable = []
    for column in present:
        reason = _unusable(ref[column], cur[column])
        if reason is None:
            usable.append(column)
            continue
        for metric in ("drift_score", "drifted"):
            figures.append(Figure(DATA_DRIFT, metric, None, "skipped", column, reason, **sizes))
    if not usable:
        detail = "no comparable feature column (all skipped or missing)"
        for metric in ("drift_share", "drifted_features", "n_features"):
            value = 0.0 if metric != "drift_share" else None
            figures.append(Figure(DATA_DRIFT, metric, value, "skipped", detail=detail, **sizes))
        return DriftResult(figures, None, None, ())
    snapshot, scores, share = _evidently_drift(cur, ref, usable)
    drifted = tuple(sorted(c for c, (_, flag, _) in scores.items() if flag))
    for column in usable:
        score, flag, method = scores[column]
        state = "drift" if flag else "ok"
        figures.append(
            Figure(DATA_DRIFT, "drift_score", _num(score), state, column, method, **sizes)
        )
        figures.append(Figure(DATA_DRIFT, "drifted", float(flag), state, column, None, **sizes))
    share_state = "drift" if drifted else "ok"
    figures += [
        Figure(
            DATA_DRIFT,
            "drift_share",
            share,
            share_state,
            detail=f"{len(drifted)} of {len(usable)} compared features drifted"
            + (f": {', '.join(drifted)}" if drifted else ""),
            **sizes,
        ),
        Figure(DATA_DRIFT, "drifted_features", float(len(drifted)), share_state, **sizes),
        Figure(DATA_DRIFT, "n_features", float(len(usable)), "ok", **sizes),
    ]
    return DriftResult(figures, snapshot, share, drifted)


def score_drift_figures(
    reference_scores: np.ndarray | None,
    live_scores: np.ndarray | None,
    *,
    sample_rows: int,
    seed: int,
    psi_bins: int = 10,
    skip_reason: str = "",
) -> DriftResult:
    """Drift of this week's champion scores against its gate-time scores.

    Args:
        reference_scores: shape ``(m,)`` probabilities the champion gave its evaluation rows at
            gate time, or None.
        live_scores: shape ``(n,)`` this week's production scores of the same version, or None.
        sample_rows: cap of each side for Evidently (PSI and quantiles use every score).
        seed: sample seed.
        psi_bins: quantile bins of the reference for the PSI (the guard policy's ``psi_bins``).
        skip_reason: why a side is None (goes to ``detail``).

    Returns:
        ``score_drift`` figures ``psi``, ``drift_share`` is not used here; ``drift_score``
        (Evidently ``ValueDrift`` on column ``score``; state ``drift`` when its test fails),
        ``score_mean``, ``score_p50``, ``score_p90``, ``score_p99`` (live). No live scores:
        ``no_data``; no reference: ``skipped`` for the comparisons, quantiles still written.
    """
    from registry_guard.guard import population_stability_index

    comparisons = ("psi", "drift_score")
    stats = ("score_mean", "score_p50", "score_p90", "score_p99")
    live = None if live_scores is None else np.asarray(live_scores, dtype=np.float64).ravel()
    ref = None if reference_scores is None else np.asarray(reference_scores, np.float64).ravel()
    live = None if live is None else live[np.isfinite(live)]
    ref = None if ref is None else ref[np.isfinite(ref)]
    if live is None or live.size == 0:
        detail = skip_reason or "no finite live scores this week"
        return DriftResult(
            [Figure(SCORE_DRIFT, m, None, "no_data", detail=detail) for m in comparisons + stats],
            None,
            None,
            (),
        )
    figures = [
        Figure(SCORE_DRIFT, "score_mean", float(live.mean()), sample_size=live.size),
        *(
            Figure(
                SCORE_DRIFT, f"score_p{q}", float(np.quantile(live, q / 100)), sample_size=live.size
            )
            for q in (50, 90, 99)
        ),
    ]
    if ref is None or ref.size < psi_bins:
        detail = skip_reason or f"{0 if ref is None else ref.size} finite gate-time scores"
        figures += [Figure(SCORE_DRIFT, m, None, "skipped", detail=detail) for m in comparisons]
        return DriftResult(figures, None, None, ())
    psi = population_stability_index(ref, live, bins=psi_bins)
    figures.append(
        Figure(
            SCORE_DRIFT,
            "psi",
            _num(psi),
            detail=f"PSI over {psi_bins} quantile bins of the gate-time scores",
            sample_size=live.size,
            reference_size=ref.size,
        )
    )
    frames = [pd.DataFrame({"score": a}) for a in (ref, live)]
    if _unusable(frames[0]["score"], frames[1]["score"]) is not None:
        reason = _unusable(frames[0]["score"], frames[1]["score"])
        figures.append(Figure(SCORE_DRIFT, "drift_score", None, "skipped", detail=reason))
        return DriftResult(figures, None, None, ())
    ref_s = seeded_sample(frames[0], sample_rows, seed)
    live_s = seeded_sample(frames[1], sample_rows, seed + 1)
    snapshot, scores, _ = _evidently_drift(live_s, ref_s, ["score"])
    score, flag, method = scores["score"]
    figures.append(
        Figure(
            SCORE_DRIFT,
            "drift_score",
            _num(score),
            "drift" if flag else "ok",
            detail=method,
            sample_size=len(live_s),
            reference_size=len(ref_s),
        )
    )
    return DriftResult(figures, snapshot, 1.0 if flag else 0.0, ("score",) if flag else ())


def quality_figures(
    scores: np.ndarray,
    labels: np.ndarray,
    targeted: np.ndarray,
    *,
    expected_average_precision: float | None,
    expected_roc_auc: float | None = None,
    auc_margin: float = 0.02,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_rows: int,
    min_positives: int,
) -> list[Figure]:
    """Realized classification quality of one matured week.

    Args:
        scores: shape ``(n,)`` production scores of the serving champion at that cutoff.
        labels: shape ``(n,)`` matured repurchase labels (0/1).
        targeted: shape ``(n,)`` bool, the rows marketing targeted (top budget share by score).
        expected_average_precision: the champion's gate-time average precision (its training
            run's ``eval_average_precision``), or None when unknown; reported, not judged.
        expected_roc_auc: the champion's gate-time ROC AUC (``eval_roc_auc``), or None.
        auc_margin: how far below the expectation live ROC AUC may be (the gate policy's
            ``auc_margin``, absolute).
        n_resamples, confidence, seed: the bootstrap of the live ROC AUC (the gate policy's).
        min_rows, min_positives: the gate policy's minimum evidence.

    Returns:
        ``quality`` figures of :data:`QUALITY_METRICS`. ``degraded`` is 1 when the *upper* bound
        of the percentile-bootstrap confidence interval of the live ROC AUC
        (``scipy.stats.bootstrap``, rows resampled with their labels) is below
        ``expected_roc_auc - auc_margin`` with at least the minimum evidence, 0 when not;
        ``skipped`` with the reason when evidence or the expectation is missing. ROC AUC and not
        average precision: AP depends on the base rate, which falls as the CDNOW cohort ages
        (14.5% to 6.4% over the log), so live AP is below gate-time AP for a healthy model; ROC
        AUC does not depend on the base rate. The interval keeps a noisy week from rolling back a
        healthy model. No rows: every figure ``no_data``; a single class: AP and ROC AUC
        ``skipped`` (undefined).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    t = np.asarray(targeted, dtype=bool).ravel()
    if not (s.shape == y.shape == t.shape):
        raise ValueError(
            f"scores, labels, targeted differ in shape: {s.shape}, {y.shape}, {t.shape}"
        )
    n, pos = int(y.size), int(y.sum())
    if n == 0:
        return [
            Figure(QUALITY, m, None, "no_data", detail="no labelled predictions for this week")
            for m in QUALITY_METRICS
        ]
    size = {"sample_size": n}
    figures: list[Figure] = []
    two_classes = 0 < pos < n
    single = f"only one class among {n:,} labels ({pos:,} positives): undefined"
    ap = float(average_precision_score(y, s)) if two_classes else None
    for metric, value in (
        ("average_precision", ap),
        ("roc_auc", float(roc_auc_score(y, s)) if two_classes else None),
    ):
        figures.append(
            Figure(
                QUALITY,
                metric,
                value,
                "ok" if two_classes else "skipped",
                detail=None if two_classes else single,
                **size,
            )
        )
    figures.append(Figure(QUALITY, "brier", float(brier_score_loss(y, s)), **size))
    figures.append(
        Figure(
            QUALITY,
            "precision_at_budget",
            float(y[t].mean()) if t.any() else None,
            "ok" if t.any() else "skipped",
            detail=f"{int(t.sum()):,} targeted rows" if t.any() else "no targeted rows",
            **size,
        )
    )
    figures.append(
        Figure(
            QUALITY,
            "expected_average_precision",
            _num(expected_average_precision),
            "ok" if expected_average_precision is not None else "skipped",
            detail="the champion's gate-time average precision (training run eval_average_precision)"
            if expected_average_precision is not None
            else "the champion's run has no eval_average_precision",
        )
    )
    figures.append(
        Figure(
            QUALITY,
            "expected_roc_auc",
            _num(expected_roc_auc),
            "ok" if expected_roc_auc is not None else "skipped",
            detail="the champion's gate-time ROC AUC (training run eval_roc_auc)"
            if expected_roc_auc is not None
            else "the champion's run has no eval_roc_auc",
        )
    )
    auc = float(roc_auc_score(y, s)) if two_classes else None
    enough = n >= min_rows and pos >= min_positives
    ci: tuple[float, float] | None = None
    if auc is not None and enough:
        from scipy.stats import bootstrap

        result = bootstrap(
            (y, s),
            lambda yy, ss: roc_auc_score(yy, ss) if 0 < yy.sum() < yy.size else np.nan,
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        ci = (float(result.confidence_interval.low), float(result.confidence_interval.high))
    for metric, value in (("roc_auc_ci_low", ci and ci[0]), ("roc_auc_ci_high", ci and ci[1])):
        figures.append(
            Figure(
                QUALITY,
                metric,
                value,
                "ok" if value is not None else "skipped",
                detail=f"{confidence:.0%} percentile bootstrap, {n_resamples:,} resamples"
                if value is not None
                else "too little evidence or a single class",
                **size,
            )
        )
    if expected_roc_auc is None or auc is None:
        figures.append(
            Figure(
                QUALITY, "degraded", None, "skipped", detail="no expectation or no live AUC", **size
            )
        )
    elif not enough or ci is None:
        figures.append(
            Figure(
                QUALITY,
                "degraded",
                None,
                "skipped",
                detail=f"{n:,} rows and {pos:,} positives: too little evidence "
                f"(needs {min_rows:,} and {min_positives:,})",
                **size,
            )
        )
    else:
        floor = expected_roc_auc - auc_margin
        bad = ci[1] < floor
        figures.append(
            Figure(
                QUALITY,
                "degraded",
                float(bad),
                "degraded" if bad else "ok",
                detail=f"live ROC AUC {auc:.4f}, {confidence:.0%} CI [{ci[0]:.4f}, {ci[1]:.4f}] "
                f"vs expected {expected_roc_auc:.4f} - margin {auc_margin} = {floor:.4f}",
                **size,
            )
        )
    return figures


def kpi_figures(
    predictions: pd.DataFrame, truth: pd.DataFrame, *, label: str, revenue: str
) -> list[Figure]:
    """Realized business KPIs of one week's targeting, and the random-targeting baseline.

    Args:
        predictions: one row per customer: ``customer_id``, ``targeted`` (bool).
        truth: matured labels at the same cutoff: ``customer_id``, ``label`` (0/1) and
            ``revenue`` (USD spent in the horizon).
        label, revenue: the names of those columns.

    Returns:
        ``kpi`` figures of :data:`KPI_METRICS` over the customers present in both frames (``n``
        of them, ``k`` targeted, ``P`` repurchasers, revenue ``R`` in all):

        - ``targeted_customers`` = k; ``targeted_repurchase_rate`` = repurchasers among the
          targeted / k; ``base_rate`` = P / n; ``lift`` = targeted rate / base rate;
          ``targeted_revenue_dollars`` = revenue of the targeted; ``targeted_revenue_share`` =
          that / R.
        - Random targeting of the same k customers, uniformly without replacement: expected
          repurchase rate = P / n (= base rate), expected revenue = R * k / n, expected revenue
          share = k / n, expected lift = 1 (exact expectations of the hypergeometric pick, not a
          simulation).

        No joined rows: every figure ``no_data``. Base rate 0 or no revenue: lift or shares
        ``skipped`` with the reason.
    """
    joined = predictions[["customer_id", "targeted"]].merge(
        truth[["customer_id", label, revenue]], on="customer_id", how="inner"
    )
    n = len(joined)
    if n == 0:
        return [
            Figure(KPI, m, None, "no_data", detail="no customer has both a prediction and a label")
            for m in KPI_METRICS
        ]
    y = joined[label].astype("int64").to_numpy()
    r = joined[revenue].astype("float64").to_numpy()
    t = joined["targeted"].astype(bool).to_numpy()
    k, positives, total = int(t.sum()), int(y.sum()), float(r.sum())
    base = positives / n
    rate = float(y[t].mean()) if k else None
    targeted_revenue = float(r[t].sum())
    size = {"sample_size": n}

    def fig(metric: str, value: float | None, why: str | None = None) -> Figure:
        """``why`` explains a missing value; random-baseline notes start with ``expected``."""
        keep = value is None or (why or "").startswith("expected")
        state = "ok" if value is not None else "skipped"
        return Figure(KPI, metric, value, state, detail=why if keep else None, **size)

    no_base = "base rate is 0: no repurchase in the horizon"
    no_rev = "no revenue in the horizon"
    return [
        fig("targeted_customers", float(k)),
        fig("targeted_repurchase_rate", rate, None if k else "no customer targeted"),
        fig("base_rate", base),
        fig("lift", rate / base if base > 0 and rate is not None else None, no_base),
        fig("targeted_revenue_dollars", targeted_revenue),
        fig("targeted_revenue_share", targeted_revenue / total if total > 0 else None, no_rev),
        fig("random_repurchase_rate", base, "expected rate of a random pick of the same size"),
        fig("random_revenue_dollars", total * k / n, "expected: total revenue * k / n"),
        fig("random_revenue_share", k / n if total > 0 else None, no_rev),
        fig("random_lift", 1.0 if base > 0 else None, no_base),
    ]
