"""Pure monitoring computations: frames and arrays in, :class:`Figure` rows out (no I/O).

Everything they know about the problem comes from the use case (:class:`rollguard.usecase.UseCase`):
which columns are features and of which kind (:class:`ColumnMapping`), the task type (which quality
figures and KPIs a week has), the money unit and the baselines. Nothing here names a use case's
column.

Each function returns the figures of one ``kind`` of the ``monitoring_results`` table (see
``docs/monitoring.md`` and :class:`rollguard.db.models.MonitoringResult`), and never raises on the
edge cases a weekly run meets: an empty window is a ``no_data`` figure, an all-empty or constant
column is ``skipped`` with the reason, missing or extra columns are ``schema_mismatch`` naming them,
too little evidence for a verdict is ``inconclusive``.

- Data drift: Evidently 0.7 ``Report([DataDriftPreset(columns=...)], include_tests=True)`` on the
  declared features, mapped by kind into ``DataDefinition(numerical_columns=...,
  categorical_columns=...)``. Evidently chooses each column's test and threshold (its documented
  defaults: up to 1,000 reference rows Kolmogorov-Smirnov p-value below 0.05 for numerical columns
  and chi-squared p-value for categorical ones; beyond, normed Wasserstein distance at or above 0.1
  for numerical and Jensen-Shannon distance at or above 0.1 for categorical columns) and reports the
  per-column verdict as the status of its ``ValueDrift`` test; the dataset share is its
  ``DriftedColumnsCount``. :func:`drift_share` is the one drift share and threshold of the retrain
  rule.
- Score drift: the Population Stability Index of :func:`domain.metrics.population_stability_index`
  (the live guard's own PSI, on every score, not sampled), Evidently's ``ValueDrift`` on the score
  column, and score quantiles (probabilities, or predictions in the label's unit).
- Quality: binary classification: average precision, ROC AUC and Brier score on matured labels and
  the precision of the targeted rows; regression: MAE, RMSE and bias in the label's unit. Both set
  ``degraded`` from a percentile-bootstrap interval of the judged metric (ROC AUC, MAE) drawn with
  :mod:`domain.metrics` (the gate's resampling), against the version's gate-time figure.
- Business KPIs: classification: the model's targeting against a random-targeting baseline, the
  expected values of a uniformly random pick of the same number of rows (see
  :func:`kpi_figures`); regression: errors in the money unit beside the declared baselines' and the
  training median's (see :func:`regression_kpi_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from domain.metrics import (
    classification_point_metrics,
    multiplicities,
    percentile_ci,
    population_stability_index,
    regression_point_metrics,
    resample_indices,
    weighted_metrics,
    weighted_regression_metrics,
)
from rollguard.usecase import CUTOFF_COLUMN, LABEL_AVAILABLE_COLUMN, TaskType, UseCase

#: ``kind`` values of ``monitoring_results``.
DATA_DRIFT, SCORE_DRIFT, QUALITY, KPI, RUN = "data_drift", "score_drift", "quality", "kpi", "run"
#: States of the ``quality``/``degraded`` figure that carry a verdict (exported as
#: ``rollguard_live_quality_state``).
VERDICT_STATES: tuple[str, ...] = ("ok", "degraded", "inconclusive")
#: Figures of kind ``quality`` for binary classification (all written, value NULL when the state
#: says there is none).
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
#: Figures of kind ``quality`` for regression (label units; ``degraded`` 0/1).
REGRESSION_QUALITY_METRICS: tuple[str, ...] = (
    "mae",
    "rmse",
    "bias",
    "expected_mae",
    "expected_rmse",
    "expected_bias",
    "mae_ci_low",
    "mae_ci_high",
    "degraded",
)
#: The metric each task type's ``degraded`` rule judges.
JUDGED_METRIC: dict[TaskType, str] = {
    TaskType.BINARY_CLASSIFICATION: "roc_auc",
    TaskType.REGRESSION: "mae",
}
#: Figures of kind ``kpi`` for binary classification (model targeting, then the random baseline).
KPI_METRICS: tuple[str, ...] = (
    "targeted_count",
    "targeted_positive_rate",
    "base_rate",
    "lift",
    "targeted_value",
    "targeted_value_share",
    "random_positive_rate",
    "random_value",
    "random_value_share",
    "random_lift",
)
#: Dataset-level figures of kind ``kpi`` for regression (money unit unless said otherwise).
REGRESSION_KPI_METRICS: tuple[str, ...] = (
    "rows",
    "mae",
    "bias",
    "value_weighted_mae",
    "predicted_total",
    "realized_total",
    "value_total",
)
#: Per-baseline figures of kind ``kpi`` for regression: metric name, ``feature`` = baseline name.
BASELINE_KPI_METRICS: tuple[str, ...] = ("baseline_mae", "baseline_bias")
#: Name of the training-median baseline (its value is a version tag, see docs/monitoring.md).
TRAINING_MEDIAN = "training_median"
#: Stable reasons of a feature's ``skipped`` ``data_drift`` rows: their ``detail`` starts with
#: ``<reason>: `` (``missing: all values empty (NaN/inf) in the current data``). ``missing``: every
#: value missing (NaN/inf, or no level) on a side; ``constant``: one value on a side (numerical)
#: or one and the same level on both sides (categorical). The exporter reads them
#: (``rollguard_feature_state``); the words after the colon may change, these may not.
SKIP_MISSING, SKIP_CONSTANT = "missing", "constant"
#: Per-feature ``data_drift`` figure: 1 when the feature took at least two values in every week
#: (cutoff) of the reference rows, else 0 (see :func:`varies_weekly`).
VARIES_WEEKLY = "varies_weekly"


def skip_reason(detail: str | None) -> str | None:
    """:data:`SKIP_MISSING` or :data:`SKIP_CONSTANT` from the ``detail`` of a feature's
    ``skipped`` drift row, or None when it is neither. Rows written before the reasons were
    stable (no ``<reason>: `` prefix) are read from their words."""
    text = (detail or "").strip()
    code = text.split(":", 1)[0]
    if code in (SKIP_MISSING, SKIP_CONSTANT):
        return code
    if text.startswith("all values"):
        return SKIP_MISSING
    if text.startswith(("constant in", "one level")):
        return SKIP_CONSTANT
    return None


def quality_metrics(task: TaskType) -> tuple[str, ...]:
    """The ``quality`` metric names of a task type."""
    return REGRESSION_QUALITY_METRICS if task is TaskType.REGRESSION else QUALITY_METRICS


def kpi_metrics(task: TaskType) -> tuple[str, ...]:
    """The dataset-level ``kpi`` metric names of a task type."""
    return REGRESSION_KPI_METRICS if task is TaskType.REGRESSION else KPI_METRICS


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a row frame are compared for drift, and how (Evidently's column mapping).

    Attributes:
        features: the feature columns, in declared order.
        categorical: the subset of ``features`` that is categorical (the rest is numerical).
        keys: other columns a row frame is expected to hold (entity key, cutoff, label, value,
            slices, baselines): never compared and never reported as extra.
    """

    features: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    @classmethod
    def from_usecase(cls, usecase: UseCase) -> ColumnMapping:
        """The mapping of ``usecase``'s declarations: ``FeatureSpec.kind`` decides numerical or
        categorical; the key, cutoff, label, value, slice and baseline columns are keys."""
        keys = (
            usecase.entity_column,
            CUTOFF_COLUMN,
            LABEL_AVAILABLE_COLUMN,
            usecase.label.column,
            usecase.value.column,
            *(s.column for s in usecase.slices),
            *(b.column for b in usecase.baselines),
        )
        return cls(
            features=usecase.feature_names,
            categorical=tuple(f.name for f in usecase.categorical_features),
            keys=tuple(dict.fromkeys(keys)),
        )

    @property
    def numerical(self) -> tuple[str, ...]:
        return tuple(c for c in self.features if c not in self.categorical)

    def is_categorical(self, column: str) -> bool:
        return column in self.categorical


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


def _unusable(ref: pd.Series, cur: pd.Series, *, categorical: bool = False) -> str | None:
    """Why a column cannot be compared (``<reason>: <words>``, reason :data:`SKIP_MISSING` or
    :data:`SKIP_CONSTANT`), or None. Numerical: all empty (NaN/inf) or constant on a side.
    Categorical: all missing on a side, or one and the same level on both sides."""
    if categorical:
        levels = []
        for side, col in (("reference", ref), ("current", cur)):
            present = col.dropna().astype(str)
            if present.empty:
                return f"{SKIP_MISSING}: all values missing in the {side} data"
            levels.append(set(present.unique()))
        if len(levels[0]) == 1 and levels[0] == levels[1]:
            return (
                f"{SKIP_CONSTANT}: one level on both sides (every value {next(iter(levels[0]))!r})"
            )
        return None
    for side, col in (("reference", ref), ("current", cur)):
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return f"{SKIP_MISSING}: all values empty (NaN/inf) in the {side} data"
        if np.all(finite == finite[0]):
            return f"{SKIP_CONSTANT}: constant in the {side} data (every value {finite[0]:g})"
    return None


def varies_weekly(reference: pd.DataFrame, mapping: ColumnMapping) -> dict[str, bool]:
    """Per feature present in ``reference``: whether it took at least two distinct values (finite
    numbers, or non-missing levels) in every week of the reference, the weeks being the
    :data:`rollguard.usecase.CUTOFF_COLUMN` values (the whole frame when there is no such column).

    A feature that is constant in some week of the champion's training rows (a seasonal flag, a
    rare count in a small week) can be constant in a monitored week without anything being
    broken; one that varied in every training week cannot.
    """
    weeks = (
        reference[CUTOFF_COLUMN]
        if CUTOFF_COLUMN in reference.columns
        else pd.Series(0, index=reference.index)
    )
    out = {}
    for column in mapping.features:
        if column not in reference.columns:
            continue
        values = reference[column]
        if mapping.is_categorical(column):
            values = values.astype("object")
        else:
            values = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan)
        distinct = values.groupby(weeks.to_numpy(), dropna=False).nunique(dropna=True)
        out[column] = bool(len(distinct) > 0 and (distinct >= 2).all())
    return out


@dataclass(frozen=True)
class DriftResult:
    """Figures of a drift computation and the Evidently snapshot behind them (None when Evidently
    did not run), for the HTML report."""

    figures: list[Figure]
    snapshot: Any | None
    drift_share: float | None
    drifted: tuple[str, ...]


def _evidently_frame(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> Any:
    """Numerical columns as float64, categorical ones as text (missing stays missing)."""
    out = pd.DataFrame(index=frame.index)
    for column in numerical:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        values = frame[column]
        out[column] = (
            values.astype("object")
            .where(values.notna(), None)
            .map(lambda v: None if v is None else str(v))
        )
    return out


def _evidently_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str],
    categorical: Sequence[str] = (),
) -> tuple[Any, dict[str, tuple[float, bool, str]], float]:
    """Run Evidently's DataDriftPreset on ``columns`` (``categorical`` ones declared categorical,
    the others numerical); returns the snapshot, ``{column: (score, drifted, method)}`` and the
    share of drifted columns."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = list(columns)
    cats = [c for c in cols if c in set(categorical)]
    nums = [c for c in cols if c not in set(cats)]
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    snapshot = Report([DataDriftPreset(columns=cols)], include_tests=True).run(
        Dataset.from_pandas(_evidently_frame(current, nums, cats), data_definition=definition),
        Dataset.from_pandas(_evidently_frame(reference, nums, cats), data_definition=definition),
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


def _schema_figures(
    reference: pd.DataFrame, current: pd.DataFrame, mapping: ColumnMapping
) -> tuple[list[Figure], list[str]]:
    """The ``schema`` figure (missing and extra columns) and the ``schema_mismatch`` figures of
    the features missing on a side; returns them and the missing features' names."""
    cols = list(mapping.features)
    key_like = set(mapping.keys)
    missing = {
        side: [c for c in cols if c not in frame.columns]
        for side, frame in (("reference", reference), ("current", current))
    }
    extra = sorted(
        {c for f in (reference, current) for c in f.columns if c not in cols and c not in key_like}
    )
    problems = []
    if missing["current"] or missing["reference"]:
        problems.append(
            "missing columns: "
            + "; ".join(f"{side}: {', '.join(m)}" for side, m in missing.items() if m)
        )
    if extra:
        problems.append(f"extra columns ignored: {', '.join(extra)}")
    figures = [
        Figure(
            DATA_DRIFT,
            "schema",
            float(bool(problems)),
            "schema_mismatch" if problems else "ok",
            detail="; ".join(problems) or f"{len(cols)} expected feature columns present",
        )
    ]
    absent = sorted(set(missing["current"]) | set(missing["reference"]))
    for column in absent:
        side = "current" if column in missing["current"] else "reference"
        figures += [
            Figure(
                DATA_DRIFT,
                metric,
                None,
                "schema_mismatch",
                column,
                f"column {column} missing from the {side} data",
            )
            for metric in ("drift_score", "drifted")
        ]
    return figures, absent


def data_drift_figures(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    sample_rows: int,
    seed: int,
) -> DriftResult:
    """Per-feature and dataset drift of ``current`` against ``reference`` on ``columns``.

    Args:
        reference: the champion's training rows (row frames of the use case, any cutoffs).
        current: this week's row frame.
        mapping: the features to compare and their kinds (:meth:`ColumnMapping.from_usecase`);
            other columns of the frames are ignored, with a ``schema_mismatch`` note when they
            are not among ``mapping.keys``.
        sample_rows: each side is sampled to at most this many rows (:func:`seeded_sample`).
        seed: sample seed (the reference uses ``seed``, the current side ``seed + 1``).

    Returns:
        Figures of kind ``data_drift``: per usable feature ``drift_score`` (Evidently's score; state
        ``drift`` or ``ok``) and ``drifted`` (0/1); per unusable feature both with state ``skipped``
        and the reason; per feature missing on a side both with state ``schema_mismatch``; dataset
        figures ``drift_share``, ``drifted_features``, ``n_features`` (usable features only, so a
        skipped column never raises the share), and ``schema`` (``schema_mismatch`` naming extra
        and missing columns, ``ok`` otherwise); per feature of the reference ``varies_weekly``
        (:func:`varies_weekly`, on every reference row). A skipped feature's ``detail`` starts
        with its stable reason (:data:`SKIP_MISSING`, :data:`SKIP_CONSTANT`). An empty side gives
        ``no_data`` dataset figures.
    """
    cols = list(mapping.features)
    figures, absent = _schema_figures(reference, current, mapping)
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
    for column, varies in varies_weekly(reference, mapping).items():
        figures.append(
            Figure(
                DATA_DRIFT,
                VARIES_WEEKLY,
                float(varies),
                feature=column,
                detail="at least two values in every reference week"
                if varies
                else "constant or missing in at least one reference week",
                reference_size=n_ref,
            )
        )
    ref = seeded_sample(reference, sample_rows, seed)
    cur = seeded_sample(current, sample_rows, seed + 1)
    sizes = {"sample_size": len(cur), "reference_size": len(ref)}
    usable = []
    for column in present:
        reason = _unusable(ref[column], cur[column], categorical=mapping.is_categorical(column))
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
    snapshot, scores, share = _evidently_drift(cur, ref, usable, mapping.categorical)
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


@dataclass(frozen=True)
class DriftShare:
    """The retrain rule's drift evidence: the share of compared features that drifted, and the
    threshold it is judged against.

    Attributes:
        share: drifted / compared features in [0, 1], or None when nothing could be compared.
        threshold: retrain when ``share > threshold`` (``settings.retrain_drift_threshold``).
        drifted: names of the drifted features, sorted.
        n_features: features compared.
        detail: one sentence for reports.
        result: the full drift computation behind it (figures, Evidently snapshot).
    """

    share: float | None
    threshold: float
    drifted: tuple[str, ...]
    n_features: int
    detail: str
    result: DriftResult = field(repr=False, compare=False)

    @property
    def exceeded(self) -> bool:
        """True when the share is measured and above the threshold (the retrain trigger)."""
        return self.share is not None and self.share > self.threshold


def drift_share(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    threshold: float,
    sample_rows: int,
    seed: int,
) -> DriftShare:
    """The ONE drift share of the retrain rule: Evidently's share of drifted features of
    ``current`` against ``reference`` (:func:`data_drift_figures`, same sampling, same per-column
    tests), judged against ``threshold``.

    Args:
        reference, current: row frames of the use case (one row per scored unit).
        mapping: :meth:`ColumnMapping.from_usecase`.
        threshold: share in [0, 1]; :attr:`DriftShare.exceeded` when the share is above it.
        sample_rows, seed: as :func:`data_drift_figures`.

    Raises:
        ValueError: ``threshold`` outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"drift threshold must be in [0, 1], not {threshold}")
    result = data_drift_figures(reference, current, mapping, sample_rows=sample_rows, seed=seed)
    n = next((f.value for f in result.figures if f.metric == "n_features"), None)
    n_features = int(n) if n is not None else 0
    if result.drift_share is None:
        detail = "drift not measured (no comparable rows or features)"
    else:
        detail = (
            f"{len(result.drifted)} of {n_features} features drifted "
            f"({result.drift_share:.0%}; threshold {threshold:.0%})"
        )
    return DriftShare(result.drift_share, threshold, result.drifted, n_features, detail, result)


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
        reference_scores: shape ``(m,)`` scores the champion gave its evaluation rows at gate
            time (probabilities, or predictions in the label's unit), or None.
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


@dataclass(frozen=True)
class LiveQualityRule:
    """The evidence and margins of the live-quality ``degraded`` rule: the gate policy's bootstrap
    (resamples, confidence, seed) and minimum evidence, and the task section's margin.

    Built by the caller from the gate and guard policies (:meth:`from_policies`); monitoring does
    not read the policy file itself (it sits below ``registry_guard``, which owns it).

    Attributes:
        n_resamples, confidence, seed: the bootstrap (``domain.metrics.resample_indices``).
        min_rows: fewer matured rows is ``inconclusive``.
        min_positives: classification: fewer positives is ``inconclusive`` (ignored for
            regression, whose minimum evidence is rows only).
        auc_margin: classification: live ROC AUC may be this much (absolute) below gate time.
        relative_margin: regression: live MAE may be this share above gate time.
        psi_bins: quantile bins of the score PSI (the guard policy's).
    """

    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_rows: int = 1
    min_positives: int = 1
    auc_margin: float = 0.02
    relative_margin: float = 0.05
    psi_bins: int = 10

    @classmethod
    def from_policies(cls, gate: Any, guard: Any, task: TaskType) -> LiveQualityRule:
        """The rule of a gate policy (shared ``n_resamples``, ``confidence``, ``seed``; sections
        ``classification``/``regression``) and a guard policy (``psi_bins``) for ``task``.
        Duck-typed on ``registry_guard.policy.GatePolicy`` and ``GuardPolicy``."""
        shared = {
            "n_resamples": gate.n_resamples,
            "confidence": gate.confidence,
            "seed": gate.seed,
            "psi_bins": guard.psi_bins,
        }
        # A policy without task sections (before regression existed) holds the classification
        # fields at its top level.
        if task is TaskType.REGRESSION:
            section = gate.regression
            return cls(
                **shared,
                min_rows=section.min_rows,
                relative_margin=section.relative_margin,
            )
        section = getattr(gate, "classification", gate)
        return cls(
            **shared,
            min_rows=section.min_rows,
            min_positives=section.min_positives,
            auc_margin=section.auc_margin,
        )


def _bootstrap_interval(
    metric: str,
    scores: np.ndarray,
    labels: np.ndarray,
    rule: LiveQualityRule,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile interval of one metric of one model on resampled rows: the gate's resampling
    (:func:`domain.metrics.resample_indices`, ``rule.seed``), metrics of every resample at once
    (:func:`domain.metrics.weighted_metrics` / ``weighted_regression_metrics``), the interval of
    :func:`domain.metrics.percentile_ci`. Resamples where the metric is undefined are left out."""
    n = labels.shape[0]
    indices = resample_indices(n, rule.n_resamples, rule.seed)
    values = []
    for start in range(0, rule.n_resamples, chunk):
        w = multiplicities(indices[start : start + chunk], n)
        if metric in ("mae", "rmse", "bias"):
            values.append(weighted_regression_metrics(scores, labels, w)[metric])
        else:
            values.append(weighted_metrics(scores, labels, w)[metric])
    return percentile_ci(np.concatenate(values), 1.0 - rule.confidence)


def _expected(metric: str, value: float | None, label: str) -> Figure:
    return Figure(
        QUALITY,
        f"expected_{metric}",
        _num(value),
        "ok" if value is not None else "skipped",
        detail=f"the champion's gate-time {label} (training run eval_{metric})"
        if value is not None
        else f"the champion's run has no eval_{metric}",
    )


def quality_figures(
    scores: np.ndarray,
    labels: np.ndarray,
    targeted: np.ndarray,
    *,
    expected_average_precision: float | None,
    expected_roc_auc: float | None = None,
    rule: LiveQualityRule,
) -> list[Figure]:
    """Realized binary-classification quality of one matured week.

    Args:
        scores: shape ``(n,)`` production scores (probabilities) of the serving champion.
        labels: shape ``(n,)`` matured labels (0/1).
        targeted: shape ``(n,)`` bool, the rows the business acted on (top budget share by score).
        expected_average_precision: the champion's gate-time average precision (its training
            run's ``eval_average_precision``), or None when unknown; reported, not judged.
        expected_roc_auc: the champion's gate-time ROC AUC (``eval_roc_auc``), or None.
        rule: bootstrap, minimum evidence (rows and positives) and ``auc_margin``.

    Returns:
        ``quality`` figures of :data:`QUALITY_METRICS`. ``degraded`` is 1 when the *upper* bound
        of the percentile-bootstrap confidence interval of the live ROC AUC
        (:func:`_bootstrap_interval`) is below ``expected_roc_auc - auc_margin``, 0 when not;
        ``inconclusive`` (value NULL) with fewer rows or positives than the rule's minimum;
        ``skipped`` with the reason when the expectation or a second class is missing. ROC AUC and
        not average precision: AP depends on the base rate, which can fall as a population ages,
        so live AP can sit below gate-time AP for a healthy model; ROC AUC does not depend on the
        base rate. The interval keeps a noisy week from flagging a healthy model. No rows: every
        figure ``no_data``; a single class: AP and ROC AUC ``skipped`` (undefined).
    """
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
    point = classification_point_metrics(s, y) if two_classes else {}
    auc = point.get("roc_auc")
    for metric, value in (
        ("average_precision", point.get("average_precision")),
        ("roc_auc", auc),
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
    brier = point["brier"] if two_classes else float(np.mean((s - y) ** 2))  # Brier (1950)
    figures.append(Figure(QUALITY, "brier", brier, **size))
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
    figures.append(_expected("average_precision", expected_average_precision, "average precision"))
    figures.append(_expected("roc_auc", expected_roc_auc, "ROC AUC"))
    enough = n >= rule.min_rows and pos >= rule.min_positives
    ci = _bootstrap_interval("roc_auc", s, y, rule) if auc is not None and enough else None
    figures += _interval_figures("roc_auc", ci, rule, size)
    evidence = (
        f"{n:,} rows and {pos:,} positives: too little evidence "
        f"(needs {rule.min_rows:,} and {rule.min_positives:,})"
    )
    if expected_roc_auc is None or auc is None:
        figures.append(_verdict(None, "skipped", "no expectation or no live ROC AUC", size))
    elif not enough or ci is None:
        figures.append(_verdict(None, "inconclusive", evidence, size))
    else:
        floor = expected_roc_auc - rule.auc_margin
        bad = ci[1] < floor
        figures.append(
            _verdict(
                float(bad),
                "degraded" if bad else "ok",
                f"live ROC AUC {auc:.4f}, {rule.confidence:.0%} CI [{ci[0]:.4f}, {ci[1]:.4f}] "
                f"vs expected {expected_roc_auc:.4f} - margin {rule.auc_margin} = {floor:.4f}",
                size,
            )
        )
    return figures


def _interval_figures(
    metric: str, ci: tuple[float, float] | None, rule: LiveQualityRule, size: dict[str, int]
) -> list[Figure]:
    ok = ci is not None and all(math.isfinite(v) for v in ci)
    return [
        Figure(
            QUALITY,
            f"{metric}_ci_{end}",
            ci[i] if ok and ci is not None else None,
            "ok" if ok else "skipped",
            detail=f"{rule.confidence:.0%} percentile bootstrap, {rule.n_resamples:,} resamples"
            if ok
            else "too little evidence or an undefined metric",
            **size,
        )
        for i, end in enumerate(("low", "high"))
    ]


def _verdict(value: float | None, state: str, detail: str, size: dict[str, int]) -> Figure:
    return Figure(QUALITY, "degraded", value, state, detail=detail, **size)


def regression_quality_figures(
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    expected_mae: float | None,
    expected_rmse: float | None = None,
    expected_bias: float | None = None,
    rule: LiveQualityRule,
) -> list[Figure]:
    """Realized regression quality of one week whose labels are known.

    Args:
        predictions: shape ``(n,)`` production predictions of the serving champion (label unit).
        labels: shape ``(n,)`` realized labels (label unit).
        expected_mae, expected_rmse, expected_bias: the champion's gate-time figures (its
            training run's ``eval_mae``, ``eval_rmse``, ``eval_bias``), or None when unknown.
        rule: bootstrap, ``min_rows`` (rows only) and ``relative_margin``.

    Returns:
        ``quality`` figures of :data:`REGRESSION_QUALITY_METRICS` (MAE, RMSE and bias from
        :func:`domain.metrics.regression_point_metrics`; bias is ``mean(pred - label)``).
        ``degraded`` is 1 when the *lower* bound of the percentile-bootstrap interval of the live
        MAE is above ``expected_mae * (1 + relative_margin)`` (worse than the gate promised by
        more than the margin, beyond noise), 0 when not; ``inconclusive`` with fewer than
        ``rule.min_rows`` rows; ``skipped`` without an expectation. Non-finite pairs are dropped
        first (and counted in ``detail``). No rows: every figure ``no_data``.
    """
    p = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in shape: {p.shape}, {y.shape}")
    keep = np.isfinite(p) & np.isfinite(y)
    dropped = int((~keep).sum())
    p, y = p[keep], y[keep]
    n = int(y.size)
    if n == 0:
        why = "no labelled predictions for this week" + (
            f" ({dropped:,} non-finite dropped)" if dropped else ""
        )
        return [Figure(QUALITY, m, None, "no_data", detail=why) for m in REGRESSION_QUALITY_METRICS]
    size = {"sample_size": n}
    point = regression_point_metrics(p, y)
    note = f"{dropped:,} rows with a non-finite prediction or label dropped" if dropped else None
    figures = [Figure(QUALITY, m, point[m], detail=note, **size) for m in ("mae", "rmse", "bias")]
    figures.append(_expected("mae", expected_mae, "MAE"))
    figures.append(_expected("rmse", expected_rmse, "RMSE"))
    figures.append(_expected("bias", expected_bias, "bias"))
    enough = n >= rule.min_rows
    ci = _bootstrap_interval("mae", p, y, rule) if enough else None
    figures += _interval_figures("mae", ci, rule, size)
    if expected_mae is None:
        figures.append(_verdict(None, "skipped", "no gate-time MAE to compare with", size))
    elif not enough or ci is None:
        figures.append(
            _verdict(
                None,
                "inconclusive",
                f"{n:,} rows: too little evidence (needs {rule.min_rows:,})",
                size,
            )
        )
    else:
        ceiling = expected_mae * (1.0 + rule.relative_margin)
        bad = ci[0] > ceiling
        figures.append(
            _verdict(
                float(bad),
                "degraded" if bad else "ok",
                f"live MAE {point['mae']:.4g}, {rule.confidence:.0%} CI [{ci[0]:.4g}, "
                f"{ci[1]:.4g}] vs expected {expected_mae:.4g} x (1 + {rule.relative_margin}) "
                f"= {ceiling:.4g}",
                size,
            )
        )
    return figures


def kpi_figures(
    predictions: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    key: str,
    label: str,
    value: str,
) -> list[Figure]:
    """Realized business KPIs of one week's targeting (binary classification), and the
    random-targeting baseline.

    Args:
        predictions: one row per scored unit: ``key``, ``targeted`` (bool).
        truth: matured rows at the same cutoff: ``key``, ``label`` (0/1) and ``value`` (the
            use case's business value, money unit).
        key, label, value: the names of those columns (the use case's entity, label and value
            columns).

    Returns:
        ``kpi`` figures of :data:`KPI_METRICS` over the rows present in both frames (``n`` of
        them, ``k`` targeted, ``P`` positives, value ``R`` in all):

        - ``targeted_count`` = k; ``targeted_positive_rate`` = positives among the targeted / k;
          ``base_rate`` = P / n; ``lift`` = targeted rate / base rate; ``targeted_value`` = value
          of the targeted; ``targeted_value_share`` = that / R.
        - Random targeting of the same k rows, uniformly without replacement: expected positive
          rate = P / n (= base rate), expected value = R * k / n, expected value share = k / n,
          expected lift = 1 (exact expectations of the hypergeometric pick, not a simulation).

        No joined rows: every figure ``no_data``. Base rate 0 or no value: lift or shares
        ``skipped`` with the reason.
    """
    joined = predictions[[key, "targeted"]].merge(truth[[key, label, value]], on=key, how="inner")
    n = len(joined)
    if n == 0:
        return [
            Figure(KPI, m, None, "no_data", detail="no row has both a prediction and a label")
            for m in KPI_METRICS
        ]
    y = joined[label].astype("int64").to_numpy()
    r = joined[value].astype("float64").to_numpy()
    t = joined["targeted"].astype(bool).to_numpy()
    k, positives, total = int(t.sum()), int(y.sum()), float(r.sum())
    base = positives / n
    rate = float(y[t].mean()) if k else None
    targeted_value = float(r[t].sum())
    size = {"sample_size": n}

    def fig(metric: str, number: float | None, why: str | None = None) -> Figure:
        """``why`` explains a missing value; random-baseline notes start with ``expected``."""
        keep = number is None or (why or "").startswith("expected")
        state = "ok" if number is not None else "skipped"
        return Figure(KPI, metric, number, state, detail=why if keep else None, **size)

    no_base = "base rate is 0: no positive label in the week"
    no_value = "no business value in the week"
    return [
        fig("targeted_count", float(k)),
        fig("targeted_positive_rate", rate, None if k else "no row targeted"),
        fig("base_rate", base),
        fig("lift", rate / base if base > 0 and rate is not None else None, no_base),
        fig("targeted_value", targeted_value),
        fig("targeted_value_share", targeted_value / total if total > 0 else None, no_value),
        fig("random_positive_rate", base, "expected rate of a random pick of the same size"),
        fig("random_value", total * k / n, "expected: total value * k / n"),
        fig("random_value_share", k / n if total > 0 else None, no_value),
        fig("random_lift", 1.0 if base > 0 else None, no_base),
    ]


def regression_kpi_figures(
    predictions: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    key: str,
    label: str,
    value: str,
    baselines: Mapping[str, str] | None = None,
    training_median: float | None = None,
    unit: str = "",
) -> list[Figure]:
    """Realized business KPIs of one week's predictions (regression), in the money unit, beside
    the naive baselines.

    Args:
        predictions: one row per scored unit: ``key``, ``score`` (the prediction, label unit).
        truth: rows with known labels at the same cutoff: ``key``, ``label``, ``value`` (the
            business value of the row, money unit) and every baseline column.
        key, label, value: the use case's entity, label and value columns.
        baselines: ``{baseline name: column of truth}`` (the use case's ``BaselineSpec`` declarations).
        training_median: the version's training-median label (version tag
            ``baseline.training_median``), a constant predictor; None when unknown.
        unit: the money unit, for ``detail``.

    Returns:
        ``kpi`` figures over the rows present in both frames with a finite prediction and label
        (``n`` rows, prediction ``p``, label ``y``, value ``v``):

        - ``rows`` = n; ``mae`` = mean |p - y|; ``bias`` = mean (p - y);
          ``value_weighted_mae`` = sum(|p - y| * v) / sum(v) (errors on the rows that bring the
          most value count most); ``predicted_total`` = sum p; ``realized_total`` = sum y;
          ``value_total`` = sum v.
        - per baseline ``b`` (``feature`` = its name, ``training_median`` included when known):
          ``baseline_mae`` and ``baseline_bias`` of ``b`` on the same rows (a baseline row that
          is missing is left out of that baseline's figures, counted in ``sample_size``).

        No joined rows: every figure ``no_data``; no value: ``value_weighted_mae`` ``skipped``.
    """
    baselines = dict(baselines or {})
    columns = [key, label, value, *dict.fromkeys(baselines.values())]
    joined = predictions[[key, "score"]].merge(truth[columns], on=key, how="inner")
    p = joined["score"].to_numpy(dtype=np.float64)
    y = joined[label].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(p) & np.isfinite(y)
    joined, p, y = joined[keep], p[keep], y[keep]
    n = len(joined)
    names = [*baselines, *([TRAINING_MEDIAN] if training_median is not None else [])]
    if n == 0:
        why = "no row has both a finite prediction and a label"
        return [Figure(KPI, m, None, "no_data", detail=why) for m in REGRESSION_KPI_METRICS] + [
            Figure(KPI, m, None, "no_data", b, why) for b in names for m in BASELINE_KPI_METRICS
        ]
    v = joined[value].to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.where(np.isfinite(v), v, 0.0)
    err = p - y
    size = {"sample_size": n}
    money = f" ({unit})" if unit else ""
    weighted = float(np.sum(np.abs(err) * v) / np.sum(v)) if np.sum(v) > 0 else None
    figures = [
        Figure(KPI, "rows", float(n), **size),
        Figure(
            KPI,
            "mae",
            float(np.mean(np.abs(err))),
            detail=f"mean |prediction - label|{money}",
            **size,
        ),
        Figure(
            KPI, "bias", float(np.mean(err)), detail=f"mean (prediction - label){money}", **size
        ),
        Figure(
            KPI,
            "value_weighted_mae",
            weighted,
            "ok" if weighted is not None else "skipped",
            detail=None if weighted is not None else "no business value in the week",
            **size,
        ),
        Figure(KPI, "predicted_total", float(np.sum(p)), **size),
        Figure(KPI, "realized_total", float(np.sum(y)), **size),
        Figure(KPI, "value_total", float(np.sum(v)), **size),
    ]
    return figures + _baseline_figures(joined, y, baselines, training_median)


def _baseline_figures(
    joined: pd.DataFrame,
    labels: np.ndarray,
    baselines: Mapping[str, str],
    training_median: float | None,
) -> list[Figure]:
    """``baseline_mae`` and ``baseline_bias`` of each baseline column of ``joined`` and of the
    constant training median, on the rows where the baseline has a value."""
    n = len(joined)
    predictors: dict[str, np.ndarray] = {
        name: joined[column].to_numpy(dtype=np.float64, na_value=np.nan)
        for name, column in baselines.items()
    }
    if training_median is not None:
        predictors[TRAINING_MEDIAN] = np.full(n, float(training_median))
    figures: list[Figure] = []
    for name, guess in predictors.items():
        ok = np.isfinite(guess)
        if not ok.any():
            figures += [
                Figure(KPI, m, None, "skipped", name, "baseline missing on every row")
                for m in BASELINE_KPI_METRICS
            ]
            continue
        e = guess[ok] - labels[ok]
        size = int(ok.sum())
        figures += [
            Figure(KPI, "baseline_mae", float(np.mean(np.abs(e))), feature=name, sample_size=size),
            Figure(KPI, "baseline_bias", float(np.mean(e)), feature=name, sample_size=size),
        ]
    return figures
