"""Training sets from weekly cutoffs, an XGBoost repurchase classifier, and its evaluation.

Out-of-time, purged design (see ``DESIGN.md``, "Out-of-time, purged evaluation"):

* the *evaluation cutoff* is the newest Monday whose label has matured (every ISO week of its horizon
  is ingested);
* the *validation cutoffs* (used only for early stopping) are the newest Mondays whose label windows
  ``[c, c + horizon)`` end at or before the evaluation cutoff;
* the *fit cutoffs* are the Mondays before those whose label windows end at or before the oldest
  validation cutoff, so no fit label overlaps a validation label and no training label overlaps
  the evaluation label (purging, López de Prado, "Advances in Financial Machine Learning", 2018, 7.4).

Everything here is pure (DataFrames in, frozen results out) except :func:`evaluation_set` and
:func:`load_training_inputs`, the thin edges that read the warehouse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rollguard.errors import RollguardError
from rollguard.weeks import check_cutoff, horizon_weeks, parse_iso_week
from usecases.cdnow.features import FEATURE_COLUMNS, LABEL, REVENUE, build_features, label_matured

if TYPE_CHECKING:
    import xgboost as xgb

    from rollguard.settings import Settings

#: Columns of the raw transaction log that define the data a model saw (dataset checksum).
TRANSACTION_COLUMNS = ("transaction_id", "customer_id", "date", "number_of_cds", "dollar_value")

#: XGBoost parameters every model uses; tuning and reuse only change :data:`TUNABLE_PARAMS`.
#: ``hist`` is XGBoost's documented deterministic CPU tree method for a fixed ``nthread`` and seed.
BASE_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eval_metric": ["logloss", "aucpr"],  # early stopping watches the last one: aucpr
}
#: Defaults of the tunable parameters (XGBoost's documented defaults except a smaller eta).
DEFAULT_TUNABLE: dict[str, Any] = {
    "eta": 0.1,
    "max_depth": 6,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "lambda": 1.0,
    "alpha": 0.0,
    "gamma": 0.0,
}
TUNABLE_PARAMS: tuple[str, ...] = tuple(DEFAULT_TUNABLE)


class TrainingDataError(RollguardError):
    """The ingested history cannot provide the cutoffs training needs."""

    kind = "training_data"


@dataclass(frozen=True)
class CutoffPlan:
    """Which cutoffs play which role. All dates are Mondays, each tuple oldest first."""

    evaluation: date
    validation: tuple[date, ...]
    fit: tuple[date, ...]
    horizon_days: int

    @property
    def training(self) -> tuple[date, ...]:
        """Fit and validation cutoffs together, oldest first."""
        return self.fit + self.validation

    def as_dict(self) -> dict[str, Any]:
        return {
            "evaluation": self.evaluation.isoformat(),
            "validation": [c.isoformat() for c in self.validation],
            "fit": [c.isoformat() for c in self.fit],
            "horizon_days": self.horizon_days,
        }


@dataclass(frozen=True)
class TrainingSet:
    """Stacked feature rows per role: one row per (customer, cutoff), columns of
    :func:`usecases.cdnow.features.build_features`. Labels are present in every frame."""

    plan: CutoffPlan
    fit: pd.DataFrame
    validation: pd.DataFrame
    evaluation: pd.DataFrame
    dataset_sha256: str


@dataclass(frozen=True)
class EvaluationSet:
    """The rows the gate scores: one row per customer at the evaluation cutoff.

    ``features`` has :data:`FEATURE_COLUMNS` (float64) in model order; ``labels`` is 0/1 (int8);
    ``revenue`` is USD in the horizon; ``customer_ids`` int64. All four share the same row order.
    """

    cutoff: date
    features: pd.DataFrame
    labels: np.ndarray
    revenue: np.ndarray
    customer_ids: np.ndarray
    dataset_sha256: str


@dataclass(frozen=True)
class TrainedModel:
    """A fitted booster and how it was fitted."""

    booster: xgb.Booster
    params: Mapping[
        str, Any
    ]  # the full booster parameters (BASE_PARAMS + tunables + seed, nthread)
    best_iteration: int  # 0-based index of the best round on validation
    n_rounds: int  # rounds kept (best_iteration + 1)
    validation_aucpr: float


@dataclass(frozen=True)
class EvaluationMetrics:
    """Quality on the evaluation cutoff. Probabilities scored against 0/1 labels.

    Lift is the repurchase rate among the top ``budget`` share of customers by score divided by the
    base rate; revenue share is the share of horizon revenue those customers bring (USD / USD).
    """

    average_precision: float
    roc_auc: float
    log_loss: float
    brier_score: float
    lift_at_budget: float
    revenue_share_at_budget: float
    base_rate: float
    n_rows: int
    n_positives: int
    budget: float

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` for MLflow (``eval_`` prefix)."""
        return {f"eval_{k}": float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of one fit (from :class:`rollguard.settings.Settings`)."""

    seed: int = 0
    nthread: int = 2
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    tunable: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_TUNABLE))

    @classmethod
    def from_settings(cls, settings: Settings, tunable: Mapping[str, Any] | None = None) -> Any:
        return cls(
            seed=settings.seed,
            nthread=settings.nthread,
            num_boost_round=settings.num_boost_round,
            early_stopping_rounds=settings.early_stopping_rounds,
            tunable=dict(tunable or DEFAULT_TUNABLE),
        )

    def booster_params(self) -> dict[str, Any]:
        """Full parameter dict passed to :func:`xgboost.train`."""
        return {**BASE_PARAMS, **self.tunable, "seed": self.seed, "nthread": self.nthread}


# --- cutoffs ---------------------------------------------------------------------------------------
def plan_cutoffs(
    ingested_weeks: Sequence[str],
    *,
    n_fit: int,
    n_validation: int = 1,
    horizon_days: int = 28,
    evaluation_cutoff: date | None = None,
) -> CutoffPlan:
    """Pick the evaluation, validation and fit cutoffs from the ingested ISO weeks.

    Args:
        ingested_weeks: ISO week labels (``1997-W05``) of accepted batches, any order.
        n_fit: number of fit cutoffs (weekly, the newest allowed ones).
        n_validation: number of validation cutoffs for early stopping.
        horizon_days: label horizon, days.
        evaluation_cutoff: use this Monday instead of the newest matured one; its label must have
            matured.

    Returns:
        A :class:`CutoffPlan`. Every cutoff has a matured label and at least one ingested week
        before it (so it has feature rows).

    Raises:
        ValueError: ``evaluation_cutoff`` is not a Monday.
        TrainingDataError: no matured cutoff, the given cutoff has not matured, or the history
            is too short for ``n_fit + n_validation`` earlier cutoffs.
    """
    weeks = sorted(set(ingested_weeks))
    if not weeks:
        raise TrainingDataError("no ingested weeks: ingest data before training")
    first_monday = parse_iso_week(weeks[0])
    horizon = timedelta(days=horizon_days)

    def usable(c: date) -> bool:
        return c > first_monday and label_matured(c, weeks, horizon_days)

    if evaluation_cutoff is None:
        candidates = [parse_iso_week(w) for w in weeks]
        matured = [c for c in candidates if usable(c)]
        if not matured:
            raise TrainingDataError(
                f"no cutoff has a matured label yet: need {len(horizon_weeks(first_monday, horizon_days))}"
                f" ingested weeks after a cutoff; ingested {weeks[0]}..{weeks[-1]}"
            )
        evaluation = max(matured)
    else:
        evaluation = check_cutoff(evaluation_cutoff)
        if not usable(evaluation):
            missing = [w for w in horizon_weeks(evaluation, horizon_days) if w not in set(weeks)]
            raise TrainingDataError(
                f"evaluation cutoff {evaluation.isoformat()} has no matured label; missing weeks: "
                f"{', '.join(missing) or 'history before the cutoff'}"
            )
    # Newest validation cutoff: its label window [c, c + horizon) ends at or before the evaluation.
    newest_val = evaluation - horizon
    newest_val -= timedelta(days=newest_val.weekday())
    validation = [newest_val - timedelta(weeks=k) for k in range(n_validation)][::-1]
    newest_fit = (validation[0] if validation else evaluation) - horizon
    newest_fit -= timedelta(days=newest_fit.weekday())
    fit = [newest_fit - timedelta(weeks=k) for k in range(n_fit)][::-1]
    short = [c for c in fit + validation if not usable(c)]
    if short:
        raise TrainingDataError(
            f"history too short for {n_fit} fit + {n_validation} validation cutoffs before "
            f"{evaluation.isoformat()}: {short[0].isoformat()} is before the data or not matured "
            f"(ingested {weeks[0]}..{weeks[-1]})"
        )
    return CutoffPlan(evaluation, tuple(validation), tuple(fit), horizon_days)


# --- data --------------------------------------------------------------------------------------------
def dataset_checksum(transactions: pd.DataFrame, until: date) -> str:
    """SHA-256 (hex) of the purchases dated before ``until``, independent of row order.

    Uses :func:`pandas.util.hash_pandas_object` on :data:`TRANSACTION_COLUMNS`, rows sorted by
    ``transaction_id``.
    """
    used = transactions.loc[transactions["date"] < pd.Timestamp(until), list(TRANSACTION_COLUMNS)]
    used = used.sort_values("transaction_id", kind="stable")
    hashed = pd.util.hash_pandas_object(used, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def stack_features(
    transactions: pd.DataFrame, cutoffs: Iterable[date], *, horizon_days: int = 28
) -> pd.DataFrame:
    """Feature and label rows at each cutoff (all labels matured), stacked oldest cutoff first."""
    frames = [
        build_features(transactions, c, label_available=True, horizon_days=horizon_days)
        for c in cutoffs
    ]
    return pd.concat(frames, ignore_index=True)


def build_training_set(transactions: pd.DataFrame, plan: CutoffPlan) -> TrainingSet:
    """Feature rows for every cutoff of ``plan`` (see :func:`stack_features`).

    Args:
        transactions: the purchase log (columns of :data:`usecases.cdnow.source.TRANSACTION_DTYPES`).
        plan: from :func:`plan_cutoffs`.

    Returns:
        A :class:`TrainingSet` whose ``dataset_sha256`` covers every purchase before the end of
        the evaluation horizon (all that the features and labels can depend on).
    """
    h = plan.horizon_days
    return TrainingSet(
        plan=plan,
        fit=stack_features(transactions, plan.fit, horizon_days=h),
        validation=stack_features(transactions, plan.validation, horizon_days=h),
        evaluation=stack_features(transactions, [plan.evaluation], horizon_days=h),
        dataset_sha256=dataset_checksum(transactions, plan.evaluation + timedelta(days=h)),
    )


def feature_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """The model inputs of ``frame``: :data:`FEATURE_COLUMNS` as float64, in model order."""
    return frame.loc[:, list(FEATURE_COLUMNS)].astype("float64")


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    """0/1 labels as int8. Raises ValueError when a label is missing (not matured)."""
    if frame[LABEL].isna().any():
        raise ValueError("labels are missing: the cutoff's horizon has not been ingested")
    return frame[LABEL].to_numpy(dtype="int8")


# --- model -------------------------------------------------------------------------------------------
def dmatrix(frame: pd.DataFrame, *, with_label: bool = True, nthread: int = 2) -> xgb.DMatrix:
    import xgboost as xgb

    label = labels_of(frame) if with_label else None
    return xgb.DMatrix(feature_matrix(frame), label=label, nthread=nthread)


def train_model(
    training: TrainingSet,
    config: TrainingConfig,
    *,
    callbacks: Sequence[Any] = (),
    dtrain: xgb.DMatrix | None = None,
    dvalid: xgb.DMatrix | None = None,
) -> TrainedModel:
    """Fit an XGBoost binary classifier on the fit rows with early stopping on the validation rows.

    Deterministic: the same data and ``config`` give the same trees (``hist``, fixed ``seed`` and
    ``nthread``).

    Args:
        training: from :func:`build_training_set`.
        config: parameters; early stopping watches validation ``aucpr``.
        callbacks: extra XGBoost callbacks (e.g. Optuna's pruning callback, which reads the
            ``validation-aucpr`` observation).
        dtrain, dvalid: prebuilt matrices (tuning builds them once for all trials).

    Returns:
        A :class:`TrainedModel` whose booster predicts with the best iteration only.
    """
    import xgboost as xgb

    dtrain = dtrain if dtrain is not None else dmatrix(training.fit, nthread=config.nthread)
    dvalid = dvalid if dvalid is not None else dmatrix(training.validation, nthread=config.nthread)
    params = config.booster_params()
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=config.num_boost_round,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        callbacks=list(callbacks),
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    kept = booster[: best + 1]  # slicing keeps only the best rounds, so plain predict() uses them
    return TrainedModel(
        booster=kept,
        params=params,
        best_iteration=best,
        n_rounds=best + 1,
        validation_aucpr=float(booster.best_score),
    )


def predict(booster: xgb.Booster, features: pd.DataFrame, *, margin: bool = False) -> np.ndarray:
    """Probabilities in [0, 1] (or log-odds margins), one per row of ``features``."""
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(feature_matrix(features)), output_margin=margin)


def evaluate(
    scores: np.ndarray, labels: np.ndarray, revenue: np.ndarray, *, budget: float
) -> EvaluationMetrics:
    """Metrics of ``scores`` (probabilities) against 0/1 ``labels`` and horizon ``revenue`` (USD).

    Metrics from :mod:`sklearn.metrics` (average precision, ROC AUC, log loss, Brier score). Lift and
    revenue share at the targeting ``budget``: the top ``ceil(budget * n)`` rows by score, ties broken
    by row order (stable sort).

    Raises:
        ValueError: when the labels hold only one class (ROC AUC is undefined).
    """
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    scores = np.asarray(scores, dtype="float64")
    labels = np.asarray(labels, dtype="int64")
    revenue = np.asarray(revenue, dtype="float64")
    n = len(labels)
    k = max(1, int(np.ceil(budget * n)))
    top = np.argsort(-scores, kind="stable")[:k]
    base_rate = float(labels.mean())
    total_revenue = float(revenue.sum())
    return EvaluationMetrics(
        average_precision=float(average_precision_score(labels, scores)),
        roc_auc=float(roc_auc_score(labels, scores)),
        log_loss=float(log_loss(labels, scores, labels=[0, 1])),
        brier_score=float(brier_score_loss(labels, scores)),
        lift_at_budget=float(labels[top].mean() / base_rate) if base_rate > 0 else 0.0,
        revenue_share_at_budget=float(revenue[top].sum() / total_revenue) if total_revenue else 0.0,
        base_rate=base_rate,
        n_rows=n,
        n_positives=int(labels.sum()),
        budget=float(budget),
    )


def evaluate_model(
    model: TrainedModel, training: TrainingSet, *, budget: float
) -> EvaluationMetrics:
    """:func:`evaluate` of ``model`` on the evaluation rows of ``training``."""
    frame = training.evaluation
    return evaluate(
        predict(model.booster, frame), labels_of(frame), frame[REVENUE].to_numpy(), budget=budget
    )


# --- edges: read the warehouse ----------------------------------------------------------------------
def make_evaluation_set(
    transactions: pd.DataFrame,
    ingested_weeks: Sequence[str],
    *,
    horizon_days: int = 28,
    cutoff: date | None = None,
) -> EvaluationSet:
    """Evaluation rows at the newest matured cutoff (or at ``cutoff``); pure.

    Raises:
        TrainingDataError: see :func:`plan_cutoffs` (only the evaluation cutoff must exist).
    """
    plan = plan_cutoffs(
        ingested_weeks, n_fit=0, n_validation=0, horizon_days=horizon_days, evaluation_cutoff=cutoff
    )
    frame = stack_features(transactions, [plan.evaluation], horizon_days=horizon_days)
    return EvaluationSet(
        cutoff=plan.evaluation,
        features=feature_matrix(frame).reset_index(drop=True),
        labels=labels_of(frame),
        revenue=frame[REVENUE].to_numpy(dtype="float64"),
        customer_ids=frame["customer_id"].to_numpy(dtype="int64"),
        dataset_sha256=dataset_checksum(
            transactions, plan.evaluation + timedelta(days=horizon_days)
        ),
    )


def evaluation_set(settings: Settings, *, cutoff: date | None = None) -> EvaluationSet:
    """The evaluation rows at the current evaluation cutoff, read from the warehouse.

    The gate (``registry_guard``) scores champion and challenger on exactly these rows.

    Raises:
        TrainingDataError: nothing ingested, or no cutoff with a matured label.
    """
    transactions, weeks, _ = load_training_inputs(settings)
    return make_evaluation_set(
        transactions, weeks, horizon_days=settings.horizon_days, cutoff=cutoff
    )


def load_training_inputs(
    settings: Settings,
    *,
    loader: Callable[[Settings], tuple[pd.DataFrame, list[str], dict[str, tuple[str, str]]]]
    | None = None,
) -> tuple[pd.DataFrame, list[str], dict[str, tuple[str, str]]]:
    """``(transactions, ingested_weeks, {batch_id: (iso_week, sha256 of the batch file)})`` from
    the warehouse (:mod:`pipeline.warehouse`), or from ``loader`` when given."""
    if loader is not None:
        return loader(settings)
    from domain import warehouse

    batches = {
        b.batch_id: (b.week, b.content_sha256)
        for b in warehouse.accepted_batches(settings)
        if b.week
    }
    return warehouse.load_transactions(settings), warehouse.ingested_weeks(settings), batches
