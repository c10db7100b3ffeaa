"""The model: an XGBoost booster fitted on a use case's rows, its predictions and its evaluation.

The rows and the out-of-time, purged cutoff plan come from :mod:`domain.evaluation`; this module fits
(binary classification: ``binary:logistic``, early stopping on validation ``aucpr``; regression:
``reg:squarederror``, early stopping on validation ``mae``), predicts (probabilities, or values in the
label's unit) and evaluates with scikit-learn's metrics. Categorical features use XGBoost's native
categorical support (``enable_categorical``; XGBoost docs, "Categorical Data").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from domain.evaluation import TrainingSet, labels_of
from domain.scoring import targeted_mask
from rollguard.usecase import TaskType, UseCase

if TYPE_CHECKING:
    import xgboost as xgb

    from rollguard.settings import Settings

#: XGBoost parameters by task type; tuning and reuse only change :data:`TUNABLE_PARAMS`.
#: ``hist`` is XGBoost's documented deterministic CPU tree method for a fixed ``nthread`` and seed.
#: Early stopping watches the last ``eval_metric``.
BASE_PARAMS: dict[TaskType, dict[str, Any]] = {
    TaskType.BINARY_CLASSIFICATION: {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": ["logloss", "aucpr"],
    },
    TaskType.REGRESSION: {
        "objective": "reg:squarederror",
        "tree_method": "hist",
        "eval_metric": ["rmse", "mae"],
    },
}
#: The validation metric early stopping and tuning watch, and whether larger is better.
VALIDATION_METRIC: dict[TaskType, tuple[str, bool]] = {
    TaskType.BINARY_CLASSIFICATION: ("aucpr", True),
    TaskType.REGRESSION: ("mae", False),
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


@dataclass(frozen=True)
class TrainedModel:
    """A fitted booster and how it was fitted.

    ``validation_score`` is the best value of ``validation_metric`` (``aucpr`` or ``mae``) on the
    validation rows.
    """

    booster: xgb.Booster
    params: Mapping[str, Any]  # the full booster parameters (base + tunables + seed, nthread)
    best_iteration: int  # 0-based index of the best round on validation
    n_rounds: int  # rounds kept (best_iteration + 1)
    validation_metric: str
    validation_score: float


@dataclass(frozen=True)
class EvaluationMetrics:
    """Quality on the evaluation rows, by task type (the other task's fields are None).

    Binary classification (probabilities against 0/1 labels): average precision, ROC AUC, log
    loss, Brier score; lift is the positive rate among the top ``budget`` share by score divided by
    the base rate; value share is the share of the business value those rows bring.
    Regression (values against labels, in the label's unit): MAE, RMSE, bias = mean(pred - label),
    and the MAE of the training median (a naive baseline).
    """

    n_rows: int
    budget: float
    average_precision: float | None = None
    roc_auc: float | None = None
    log_loss: float | None = None
    brier_score: float | None = None
    lift_at_budget: float | None = None
    revenue_share_at_budget: float | None = None
    base_rate: float | None = None
    n_positives: int | None = None
    mae: float | None = None
    rmse: float | None = None
    bias: float | None = None
    baseline_median_mae: float | None = None
    training_median: float | None = None

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` for MLflow (``eval_`` prefix), the task's fields only."""
        return {f"eval_{k}": float(v) for k, v in self.__dict__.items() if v is not None}


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

    def booster_params(self, task: TaskType) -> dict[str, Any]:
        """Full parameter dict passed to :func:`xgboost.train` for ``task``."""
        return {**BASE_PARAMS[task], **self.tunable, "seed": self.seed, "nthread": self.nthread}


# --- model -------------------------------------------------------------------------------------------
def dmatrix(
    usecase: UseCase, frame: pd.DataFrame, *, with_label: bool = True, nthread: int = 2
) -> xgb.DMatrix:
    """XGBoost matrix of ``frame``'s model inputs (categoricals native), with labels when asked.

    Raises:
        ValueError: ``with_label`` and a label is missing (not matured).
    """
    import xgboost as xgb

    label = labels_of(usecase, frame) if with_label else None
    return xgb.DMatrix(
        usecase.feature_frame(frame), label=label, nthread=nthread, enable_categorical=True
    )


def train_model(
    usecase: UseCase,
    training: TrainingSet,
    config: TrainingConfig,
    *,
    callbacks: Sequence[Any] = (),
    dtrain: xgb.DMatrix | None = None,
    dvalid: xgb.DMatrix | None = None,
) -> TrainedModel:
    """Fit an XGBoost model for the use case's task on the fit rows, early stopping on validation.

    Deterministic: the same data and ``config`` give the same trees (``hist``, fixed ``seed`` and
    ``nthread``).

    Args:
        usecase: the task type and the model inputs.
        training: from :func:`domain.evaluation.build_training_set`.
        config: parameters; early stopping watches :data:`VALIDATION_METRIC`.
        callbacks: extra XGBoost callbacks (e.g. Optuna's pruning callback, which reads the
            ``validation-<metric>`` observation).
        dtrain, dvalid: prebuilt matrices (tuning builds them once for all trials).

    Returns:
        A :class:`TrainedModel` whose booster predicts with the best iteration only.
    """
    import xgboost as xgb

    n = config.nthread
    dtrain = dtrain if dtrain is not None else dmatrix(usecase, training.fit, nthread=n)
    dvalid = dvalid if dvalid is not None else dmatrix(usecase, training.validation, nthread=n)
    params = config.booster_params(usecase.task)
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
        validation_metric=VALIDATION_METRIC[usecase.task][0],
        validation_score=float(booster.best_score),
    )


def predict(
    usecase: UseCase, booster: xgb.Booster, rows: pd.DataFrame, *, margin: bool = False
) -> np.ndarray:
    """Shape ``(n,)``: probabilities in [0, 1] (or log-odds margins) for classification, values in
    the label's unit for regression; one per row of ``rows``."""
    import xgboost as xgb

    matrix = xgb.DMatrix(usecase.feature_frame(rows), enable_categorical=True)
    return booster.predict(matrix, output_margin=margin)


def evaluate(
    usecase: UseCase,
    scores: np.ndarray,
    labels: np.ndarray,
    values: np.ndarray,
    *,
    budget: float,
    training_median: float | None = None,
) -> EvaluationMetrics:
    """Metrics of ``scores`` against ``labels`` (shape ``(n,)`` each) for the use case's task.

    Metrics from :mod:`sklearn.metrics`. Classification: lift and value share at the targeting
    ``budget`` (the top ``ceil(budget * n)`` rows by score, ties by row order,
    :func:`domain.scoring.targeted_mask`). Regression: ``training_median`` is the median label of
    the training rows, scored as a constant prediction (the naive baseline).

    Raises:
        ValueError: classification labels of one class only (ROC AUC is undefined).
    """
    scores = np.asarray(scores, dtype="float64")
    labels = np.asarray(labels, dtype="float64")
    if usecase.is_classification:
        return _evaluate_classification(scores, labels, np.asarray(values, "float64"), budget)
    return _evaluate_regression(scores, labels, budget, training_median)


def _evaluate_classification(
    scores: np.ndarray, labels: np.ndarray, values: np.ndarray, budget: float
) -> EvaluationMetrics:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = labels.astype("int64")
    top = targeted_mask(scores, budget)
    if not top.any():
        top[np.argmax(scores)] = True
    base_rate = float(y.mean())
    total = float(values.sum())
    return EvaluationMetrics(
        n_rows=len(y),
        budget=float(budget),
        average_precision=float(average_precision_score(y, scores)),
        roc_auc=float(roc_auc_score(y, scores)),
        log_loss=float(log_loss(y, scores, labels=[0, 1])),
        brier_score=float(brier_score_loss(y, scores)),
        lift_at_budget=float(y[top].mean() / base_rate) if base_rate > 0 else 0.0,
        revenue_share_at_budget=float(values[top].sum() / total) if total else 0.0,
        base_rate=base_rate,
        n_positives=int(y.sum()),
    )


def _evaluate_regression(
    scores: np.ndarray, labels: np.ndarray, budget: float, training_median: float | None
) -> EvaluationMetrics:
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    median = float(np.median(labels)) if training_median is None else float(training_median)
    return EvaluationMetrics(
        n_rows=len(labels),
        budget=float(budget),
        mae=float(mean_absolute_error(labels, scores)),
        rmse=float(root_mean_squared_error(labels, scores)),
        bias=float(np.mean(scores - labels)),
        baseline_median_mae=float(mean_absolute_error(labels, np.full_like(labels, median))),
        training_median=median,
    )


def evaluate_model(
    usecase: UseCase, model: TrainedModel, training: TrainingSet, *, budget: float
) -> EvaluationMetrics:
    """:func:`evaluate` of ``model`` on the evaluation rows of ``training``."""
    frame = training.evaluation
    median = None
    if not usecase.is_classification:
        median = float(
            np.median(labels_of(usecase, pd.concat([training.fit, training.validation])))
        )
    return evaluate(
        usecase,
        predict(usecase, model.booster, frame),
        labels_of(usecase, frame),
        frame[usecase.value.column].to_numpy(dtype="float64"),
        budget=budget,
        training_median=median,
    )
