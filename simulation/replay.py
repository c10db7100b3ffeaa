"""One use case's real history, replayed week by week for the decision-quality harness.

The harness (``benchmarks/bench_decisions.py``, ``docs/decisions.md``) measures how often the
gate, the guard and the retrain trigger decide wrongly. It must judge the *real* decision functions
on the *real* data; this module gives them what the weekly pipeline would:

- every ISO week of the use case's full history (:attr:`Replay.weeks`), as the feed delivers them;
- the row frame at any cutoff (:meth:`Replay.rows`, the use case's own ``build_rows``);
- the challenger the pipeline trains when the newest ingested week is ``w``
  (:meth:`Replay.train_at`): the same cutoff plan (:func:`domain.evaluation.plan_cutoffs` with the
  settings' fit and validation cutoffs), the same rows and the same deterministic XGBoost fit
  (:func:`pipeline.training.train_model`) with the default parameters (no Optuna search: tuning
  is a separate decision, and a tuned model would make every figure depend on the search budget);
- the gate's evaluation rows for that training (:meth:`Replay.evaluation`) as the arrays
  :func:`registry_guard.gate.evaluate_gate` takes (:func:`registry_guard.registry.gate_inputs`).

Everything is cached in memory per :class:`Replay` object: one harness run builds each cutoff's rows
and trains each week's model once, and the gate, guard and trigger simulations share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Protocol

import numpy as np
import pandas as pd

from domain.evaluation import CutoffPlan, TrainingSet, build_training_set, plan_cutoffs
from pipeline import training
from registry_guard.gate import GateDecision, ModelEvidence, evaluate_gate
from registry_guard.policy import GatePolicy
from registry_guard.registry import gate_inputs
from rollguard.settings import Settings
from rollguard.usecase import UseCase, load_usecase
from rollguard.weeks import iso_week_label


@dataclass(frozen=True)
class Evaluation:
    """The gate's evaluation rows of one training, as arrays.

    Attributes:
        cutoffs: the pooled evaluation cutoffs (oldest first).
        rows: the row frame (matured labels only), ``n`` rows.
        features: the model inputs of ``rows`` (the use case's ``feature_frame``).
        labels: shape ``(n,)``: 0/1 (int64) or the regression label (float64, label unit).
        values: shape ``(n,)``: business value per row (the use case's money unit).
        slices: slice name -> shape ``(n,)`` segment labels (strings).
    """

    cutoffs: tuple[date, ...]
    rows: pd.DataFrame
    features: pd.DataFrame
    labels: np.ndarray
    values: np.ndarray
    slices: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return int(self.labels.size)


@dataclass(frozen=True)
class Trained:
    """The challenger the pipeline trains when ``week`` is the newest ingested week.

    Attributes:
        week: ISO week label of the newest ingested week.
        plan: its cutoff plan (evaluation, validation and fit cutoffs).
        model: the fitted model (best iteration only).
        training_median: regression: the median label of the fit rows (the constant baseline the
            gate asks it to beat); None for classification.
    """

    week: str
    plan: CutoffPlan
    model: training.TrainedModel
    training_median: float | None


@dataclass
class Replay:
    """A use case's history, its weekly rows and its weekly challengers (cached).

    Args:
        usecase_name: a registered use case (``cdnow``, ``hotel`` or a team's own).
        seed: XGBoost seed of every fit (the settings' default when None); different seeds give
            the A/A "same data, different seed" retrains.
    """

    usecase_name: str
    seed: int | None = None
    _rows: dict[tuple[date, bool], pd.DataFrame] = field(default_factory=dict, repr=False)
    _trained: dict[tuple[object, ...], Trained] = field(default_factory=dict, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return Settings(usecase=self.usecase_name)

    @cached_property
    def usecase(self) -> UseCase:
        return load_usecase(self.usecase_name)

    @cached_property
    def records(self) -> pd.DataFrame:
        """Every record of the history (the use case's record schema)."""
        return self.usecase.load_history().records

    @cached_property
    def weeks(self) -> list[str]:
        """ISO week labels of the history, oldest first (the feed's weekly files)."""
        times = pd.to_datetime(self.records[self.usecase.record_time_column])
        return sorted({iso_week_label(t.date()) for t in times})

    def rows(self, cutoff: date, *, label_available: bool = True) -> pd.DataFrame:
        """The use case's row frame at ``cutoff`` built from the whole history (cached).

        With ``label_available`` the label of every row is filled from the records after the
        cutoff, as if its horizon had been ingested.
        """
        key = (cutoff, label_available)
        if key not in self._rows:
            self._rows[key] = self.usecase.build_rows(
                self.records, cutoff, label_available=label_available
            )
        return self._rows[key]

    def plan(self, week: str) -> CutoffPlan:
        """The cutoff plan of a training when ``week`` is the newest ingested week.

        Raises:
            domain.evaluation.TrainingDataError: the history up to ``week`` is too short.
        """
        upto = self.weeks[: self.weeks.index(week) + 1]
        return plan_cutoffs(
            self.usecase,
            upto,
            n_fit=self.settings.training_cutoffs,
            n_validation=self.settings.validation_cutoffs,
            horizon_days=self.settings.horizon_days,
        )

    def train_at(
        self,
        week: str,
        *,
        seed: int | None = None,
        label_noise: float = 0.0,
        tunable: dict[str, float] | None = None,
    ) -> Trained:
        """Train (once; cached) the challenger of ``week`` with the pipeline's own functions.

        Args:
            week: the newest ingested ISO week.
            seed: XGBoost seed (default: this replay's, else the settings'). The default parameters
                do not subsample (``subsample`` = ``colsample_bytree`` = 1), so a seed changes a
                model only together with ``tunable`` values below 1.
            label_noise: share of the fit and validation labels permuted among themselves before
                the fit (1.0: every label shuffled, a model that learned nothing real).
            tunable: parameters over :data:`pipeline.training.DEFAULT_TUNABLE` (e.g.
                ``{"subsample": 0.8}``).

        Raises:
            domain.evaluation.TrainingDataError: the history up to ``week`` is too short.
        """
        if seed is None:
            seed = self.settings.seed if self.seed is None else self.seed
        extra = dict(tunable or {})
        key = (week, seed, float(label_noise), tuple(sorted(extra.items())))
        if key in self._trained:
            return self._trained[key]
        plan = self.plan(week)
        data = build_training_set(self.usecase, self.records, plan)
        if label_noise > 0:
            data = _permute_labels(self.usecase, data, label_noise, seed)
        config = training.TrainingConfig(
            seed=seed,
            nthread=self.settings.nthread,
            num_boost_round=self.settings.num_boost_round,
            early_stopping_rounds=self.settings.early_stopping_rounds,
            tunable={**training.DEFAULT_TUNABLE, **extra},
        )
        model = training.train_model(self.usecase, data, config)
        median = None
        if not self.usecase.is_classification:
            median = float(np.median(data.fit[self.usecase.label.column].to_numpy(float)))
        self._trained[key] = Trained(week, plan, model, median)
        return self._trained[key]

    def evaluation(self, cutoffs: tuple[date, ...]) -> Evaluation:
        """The gate's evaluation rows at ``cutoffs`` (matured labels), as arrays."""
        frame = pd.concat([self.rows(c) for c in cutoffs], ignore_index=True)
        inputs = gate_inputs(frame, self.usecase)
        return Evaluation(
            cutoffs=tuple(cutoffs),
            rows=frame,
            features=inputs.features,
            labels=inputs.labels,
            values=inputs.values,
            slices=dict(inputs.slices),
        )

    def gate(
        self,
        challenger: np.ndarray,
        champion: np.ndarray,
        rows: EvaluationArrays,
        policy: GatePolicy,
        *,
        constant: float | None,
        versions: tuple[str, str] = ("challenger", "champion"),
        pick: np.ndarray | None = None,
    ) -> GateDecision:
        """The real gate (:func:`registry_guard.gate.evaluate_gate`) on scores of ``rows``, with
        everything else derived from the use case as the pipeline's gate derives it.

        Args:
            challenger, champion: shape ``(n,)`` scores on the ``n`` evaluation rows.
            rows: their labels, values and slices.
            policy: the gate policy judged.
            constant: regression: the training-median label the challenger must beat.
            versions: the names the decision reports for both models.
            pick: row indices (a resample, with repeats) to judge instead of all ``n`` rows.
        """
        every = np.arange(rows.labels.size) if pick is None else pick
        names = tuple(self.usecase.feature_names)
        return evaluate_gate(
            ModelEvidence(challenger[every], versions[0], feature_names=names),
            ModelEvidence(champion[every], versions[1], feature_names=names),
            rows.labels[every],
            rows.values[every],
            {k: v[every] for k, v in rows.slices.items()},
            policy,
            task=self.usecase.task,
            expected_features=names,
            label=self.usecase.label,
            budget=self.settings.targeting_budget,
            constant=constant,
        )

    def predict(self, trained: Trained, rows: pd.DataFrame) -> np.ndarray:
        """Shape ``(n,)`` scores of ``trained`` on ``rows`` (probabilities or label units)."""
        return np.asarray(
            training.predict(self.usecase, trained.model.booster, rows), dtype=np.float64
        )


class EvaluationArrays(Protocol):
    """Labels, values and slices of evaluation rows (an :class:`Evaluation`, or a simulated
    population of one)."""

    labels: np.ndarray
    values: np.ndarray
    slices: dict[str, np.ndarray]


def _permute_labels(usecase: UseCase, data: TrainingSet, share: float, seed: int) -> TrainingSet:
    """A copy of ``data`` whose fit and validation labels are permuted on a ``share`` of rows."""
    rng = np.random.default_rng(seed)
    column = usecase.label.column

    def shuffled(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        picked = np.flatnonzero(rng.random(len(frame)) < share)
        values = frame[column].to_numpy().copy()
        values[picked] = values[rng.permutation(picked)]
        frame[column] = values
        return frame

    return TrainingSet(
        plan=data.plan,
        fit=shuffled(data.fit),
        validation=shuffled(data.validation),
        evaluation=data.evaluation,
        dataset_sha256=data.dataset_sha256,
    )
