"""Which weekly cutoffs train, validate and evaluate a model, and the rows of each role.

Out-of-time, purged design (docs/design.md, "Out-of-time, purged evaluation"):

* the *evaluation cutoffs* are the newest ``usecase.evaluation_cutoffs`` Mondays whose labels have
  matured (every ISO week of the label horizon is ingested); the newest is *the* evaluation cutoff;
* the *validation cutoffs* (early stopping only) are the newest Mondays whose label windows end at or
  before the oldest evaluation cutoff's rows begin;
* the *fit cutoffs* are the Mondays before those, purged the same way from the validation cutoffs,
  so no training label overlaps an evaluation label (purging: López de Prado, "Advances in
  Financial Machine Learning", 2018, 7.4).

The purge gap between a cutoff and the next role's cutoffs is the label horizon for
``entity_at_cutoff`` use cases (the label window is ``[c, c + horizon)``) and one week at least (an
``event`` use case's rows at ``c`` are the week ``[c - 7 days, c)``; two cutoffs a week apart share no
row), see :func:`purge_gap`.

Everything is pure (DataFrames in, frozen results out) except :func:`load_training_inputs` and
:func:`evaluation_rows`, the thin edges that read the warehouse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from domain import warehouse
from rollguard.errors import RollguardError
from rollguard.usecase import UseCase
from rollguard.weeks import check_cutoff, horizon_weeks, parse_iso_week

if TYPE_CHECKING:
    from rollguard.settings import Settings


class TrainingDataError(RollguardError):
    """The ingested history cannot provide the cutoffs training or evaluation needs."""

    kind = "training_data"


@dataclass(frozen=True)
class CutoffPlan:
    """Which cutoffs play which role. All dates are Mondays, each tuple oldest first.

    ``evaluation`` is the newest evaluation cutoff; ``evaluation_pool`` all of them (it ends with
    ``evaluation``). ``horizon_days`` is the label horizon.
    """

    evaluation: date
    validation: tuple[date, ...]
    fit: tuple[date, ...]
    horizon_days: int
    evaluation_pool: tuple[date, ...] = ()

    @property
    def training(self) -> tuple[date, ...]:
        """Fit and validation cutoffs together, oldest first."""
        return self.fit + self.validation

    @property
    def evaluations(self) -> tuple[date, ...]:
        """The evaluation cutoffs, oldest first (at least ``evaluation``)."""
        return self.evaluation_pool or (self.evaluation,)

    def as_dict(self) -> dict[str, Any]:
        return {
            "evaluation": self.evaluation.isoformat(),
            "evaluation_pool": [c.isoformat() for c in self.evaluations],
            "validation": [c.isoformat() for c in self.validation],
            "fit": [c.isoformat() for c in self.fit],
            "horizon_days": self.horizon_days,
        }


@dataclass(frozen=True)
class TrainingSet:
    """Stacked row frames per role (see :meth:`rollguard.usecase.UseCase.build_rows`), labels
    matured in every frame. ``dataset_sha256`` covers every record the rows can depend on."""

    plan: CutoffPlan
    fit: pd.DataFrame
    validation: pd.DataFrame
    evaluation: pd.DataFrame
    dataset_sha256: str


@dataclass(frozen=True)
class EvaluationRows:
    """The rows the gate scores: the matured row frames of the evaluation cutoffs, stacked.

    Attributes:
        rows: one row per scored unit and evaluation cutoff (columns of ``build_rows``).
        cutoffs: the evaluation cutoffs, oldest first.
        dataset_sha256: checksum of the records the rows depend on.
    """

    rows: pd.DataFrame
    cutoffs: tuple[date, ...]
    dataset_sha256: str

    @property
    def cutoff(self) -> date:
        """The newest evaluation cutoff."""
        return self.cutoffs[-1]


# --- cutoffs ---------------------------------------------------------------------------------------
def purge_gap(usecase: UseCase, horizon_days: int | None = None) -> timedelta:
    """Least distance between a cutoff and a later role's oldest cutoff (see the module docstring)."""
    horizon = usecase.label.horizon_days if horizon_days is None else horizon_days
    return timedelta(days=max(horizon, 7))


def label_matured(usecase: UseCase, cutoff: date, weeks: Iterable[str], horizon_days: int) -> bool:
    """True when every ISO week of the label horizon after ``cutoff`` is among ``weeks``."""
    have = set(weeks)
    return all(week in have for week in _horizon_weeks(usecase, cutoff, horizon_days))


def _horizon_weeks(usecase: UseCase, cutoff: date, horizon_days: int) -> list[str]:
    if horizon_days == usecase.label.horizon_days:
        return usecase.label_weeks(cutoff)
    return horizon_weeks(cutoff, horizon_days)


def plan_cutoffs(
    usecase: UseCase,
    ingested_weeks: Sequence[str],
    *,
    n_fit: int,
    n_validation: int = 1,
    n_evaluation: int | None = None,
    horizon_days: int | None = None,
    evaluation_cutoff: date | None = None,
) -> CutoffPlan:
    """Pick the evaluation, validation and fit cutoffs from the ingested ISO weeks.

    Args:
        usecase: decides the horizon, the purge gap and the default evaluation pool size.
        ingested_weeks: ISO week labels (``1997-W05``) of accepted batches, any order.
        n_fit: number of fit cutoffs (weekly, the newest allowed ones).
        n_validation: number of validation cutoffs for early stopping.
        n_evaluation: evaluation cutoffs pooled (default ``usecase.evaluation_cutoffs``).
        horizon_days: label horizon, days (default the use case's).
        evaluation_cutoff: use this Monday as the newest evaluation cutoff instead of the newest
            matured one; its label must have matured.

    Returns:
        A :class:`CutoffPlan`. Every cutoff has a matured label and at least one ingested week
        before it (so it has rows).

    Raises:
        ValueError: ``evaluation_cutoff`` is not a Monday.
        TrainingDataError: no matured cutoff, the given cutoff has not matured, or the history
            is too short for the cutoffs asked for.
    """
    horizon = usecase.label.horizon_days if horizon_days is None else horizon_days
    weeks = sorted(set(ingested_weeks))
    if not weeks:
        raise TrainingDataError("no ingested weeks: ingest data before training")
    first_monday = parse_iso_week(weeks[0])

    def usable(c: date) -> bool:
        return c > first_monday and label_matured(usecase, c, weeks, horizon)

    evaluation = _evaluation_cutoff(usecase, weeks, horizon, evaluation_cutoff, usable)
    n_eval = usecase.evaluation_cutoffs if n_evaluation is None else n_evaluation
    pool = [evaluation - timedelta(weeks=k) for k in range(max(n_eval, 1))][::-1]
    gap = purge_gap(usecase, horizon)
    validation = _weekly_before(pool[0] - gap, n_validation)
    fit = _weekly_before((validation[0] if validation else pool[0]) - gap, n_fit)
    short = [c for c in fit + validation + pool if not usable(c)]
    if short:
        raise TrainingDataError(
            f"history too short for {n_fit} fit + {n_validation} validation + {len(pool)} "
            f"evaluation cutoffs up to {evaluation.isoformat()}: {short[0].isoformat()} is before "
            f"the data or not matured (ingested {weeks[0]}..{weeks[-1]})"
        )
    return CutoffPlan(evaluation, tuple(validation), tuple(fit), horizon, tuple(pool))


def _evaluation_cutoff(
    usecase: UseCase,
    weeks: list[str],
    horizon: int,
    given: date | None,
    usable: Any,
) -> date:
    if given is None:
        candidates = [parse_iso_week(w) for w in weeks]
        candidates.append(parse_iso_week(weeks[-1]) + timedelta(days=7))
        matured = [c for c in candidates if usable(c)]
        if not matured:
            need = len(_horizon_weeks(usecase, parse_iso_week(weeks[0]), horizon))
            raise TrainingDataError(
                f"no cutoff has a matured label yet: need {need} ingested weeks after a cutoff; "
                f"ingested {weeks[0]}..{weeks[-1]}"
            )
        return max(matured)
    evaluation = check_cutoff(given)
    if not usable(evaluation):
        missing = [w for w in _horizon_weeks(usecase, evaluation, horizon) if w not in set(weeks)]
        raise TrainingDataError(
            f"evaluation cutoff {evaluation.isoformat()} has no matured label; missing weeks: "
            f"{', '.join(missing) or 'history before the cutoff'}"
        )
    return evaluation


def _weekly_before(newest: date, n: int) -> list[date]:
    """``n`` Mondays, a week apart, the newest at or before ``newest``; oldest first."""
    monday = newest - timedelta(days=newest.weekday())
    return [monday - timedelta(weeks=k) for k in range(n)][::-1]


# --- rows --------------------------------------------------------------------------------------------
def dataset_checksum(usecase: UseCase, records: pd.DataFrame, until: date) -> str:
    """SHA-256 (hex) of the records dated before ``until``, independent of row order.

    Uses :func:`pandas.util.hash_pandas_object` on the record schema's columns, rows sorted by the
    record id.
    """
    time = usecase.record_time_column
    used = records.loc[records[time] < pd.Timestamp(until), list(usecase.record_columns)]
    used = used.sort_values(usecase.record_id_column, kind="stable")
    hashed = pd.util.hash_pandas_object(used, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def stack_rows(usecase: UseCase, records: pd.DataFrame, cutoffs: Iterable[date]) -> pd.DataFrame:
    """Row frames at each cutoff (all labels matured), stacked oldest cutoff first.

    Raises:
        rollguard.usecase.UseCaseError: the built rows break the use case's declarations.
    """
    frames = [usecase.build_rows(records, c, label_available=True) for c in cutoffs]
    if not frames:
        return usecase.build_rows(records.iloc[:0], date(1970, 1, 5), label_available=True)
    out = pd.concat(frames, ignore_index=True)
    usecase.check_rows(out)
    return out


def data_end(plan: CutoffPlan) -> date:
    """Day after the newest record any row of ``plan`` can depend on (the evaluation labels)."""
    return plan.evaluation + timedelta(days=plan.horizon_days)


def build_training_set(usecase: UseCase, records: pd.DataFrame, plan: CutoffPlan) -> TrainingSet:
    """Rows for every cutoff of ``plan`` (see :func:`stack_rows`)."""
    return TrainingSet(
        plan=plan,
        fit=stack_rows(usecase, records, plan.fit),
        validation=stack_rows(usecase, records, plan.validation),
        evaluation=stack_rows(usecase, records, plan.evaluations),
        dataset_sha256=dataset_checksum(usecase, records, data_end(plan)),
    )


def labels_of(usecase: UseCase, frame: pd.DataFrame) -> np.ndarray:
    """Labels as float64 (0/1 for classification), one per row.

    Raises:
        ValueError: a label is missing (its horizon has not been ingested).
    """
    column = frame[usecase.label.column]
    if column.isna().any():
        raise ValueError("labels are missing: the cutoff's horizon has not been ingested")
    return column.to_numpy(dtype="float64")


def make_evaluation_rows(
    usecase: UseCase,
    records: pd.DataFrame,
    ingested_weeks: Sequence[str],
    *,
    horizon_days: int | None = None,
    cutoff: date | None = None,
) -> EvaluationRows:
    """Evaluation rows at the newest matured cutoffs (or ending at ``cutoff``); pure.

    Raises:
        TrainingDataError: see :func:`plan_cutoffs` (only the evaluation cutoffs must exist).
    """
    plan = plan_cutoffs(
        usecase,
        ingested_weeks,
        n_fit=0,
        n_validation=0,
        horizon_days=horizon_days,
        evaluation_cutoff=cutoff,
    )
    rows = stack_rows(usecase, records, plan.evaluations)
    return EvaluationRows(
        rows=rows,
        cutoffs=plan.evaluations,
        dataset_sha256=dataset_checksum(usecase, records, data_end(plan)),
    )


# --- edges: read the warehouse ----------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingInputs:
    """What training reads from the warehouse: every accepted record, the ingested ISO weeks, and
    ``{batch_id: (iso_week, sha256 of the batch file)}`` for lineage."""

    records: pd.DataFrame
    weeks: list[str]
    batches: dict[str, tuple[str, str]]


def load_training_inputs(settings: Settings, *, engine: Engine | None = None) -> TrainingInputs:
    """Read :class:`TrainingInputs` from the warehouse."""
    batches = {
        b.batch_id: (b.week, b.content_sha256)
        for b in warehouse.accepted_batches(settings, engine=engine)
        if b.week
    }
    return TrainingInputs(
        records=warehouse.load_records(settings, engine=engine),
        weeks=warehouse.ingested_weeks(settings, engine=engine),
        batches=batches,
    )


def evaluation_rows(
    settings: Settings, *, cutoff: date | None = None, engine: Engine | None = None
) -> EvaluationRows:
    """The evaluation rows at the current evaluation cutoffs, read from the warehouse. The gate
    scores champion and challenger on exactly these rows.

    Raises:
        TrainingDataError: nothing ingested, or no cutoff with a matured label.
    """
    inputs = load_training_inputs(settings, engine=engine)
    return make_evaluation_rows(
        settings.usecase_spec,
        inputs.records,
        inputs.weeks,
        horizon_days=settings.horizon_days,
        cutoff=cutoff,
    )
