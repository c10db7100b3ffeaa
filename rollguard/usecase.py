"""The use-case contract: one object declares a prediction problem; everything else derives from it.

A use case says what the raw records are (a pandera schema, with its validation rules), how a weekly
landing file is parsed, what one scored row is (one entity at a cutoff, or one event), the features
(name, numeric or categorical, bounds, unit, description, example), how rows, labels and the business
value are built point-in-time for a cutoff, when a label matures (a horizon in days, or at once),
the task type, the slices, the targeting/KPI definition and the model name. Ingestion, the warehouse,
snapshots, training, the gate, the guard, the API and UI schemas, Evidently's column mapping, the
KPIs and the dashboards are derived from it; nothing outside a use case's own package names its
columns. See docs/design.md ("Use cases") and docs/usecases.md (how to write one).

Use cases are found through the entry-point group :data:`ENTRY_POINT_GROUP` and chosen by the setting
``ROLLGUARD_USECASE`` (unset: the one named in :data:`DEFAULT_ENTRY_POINT_GROUP`). An entry point
names either a :class:`UseCase` instance or a callable with no arguments that returns one. The
built-in ones register exactly that way, in Rollguard's ``pyproject.toml``; a team's own package
registers in its own.

Cutoffs and rows (both scoring units):

* ``entity_at_cutoff``: at a cutoff ``t`` (a Monday), one row per entity known before ``t``; features
  from records dated strictly before ``t``; the label from ``[t, t + horizon_days)``.
* ``event``: at a cutoff ``t``, one row per event of the ISO week that ends at ``t`` (records dated in
  ``[t - 7 days, t)``); features are what is known when the event is created; the label is known at
  once (``horizon_days = 0``) or after the horizon.

Either way the label of cutoff ``t`` is complete once every ISO week overlapping
``[t, t + horizon_days)`` is ingested (none when the horizon is 0), and a training cutoff ``c`` is
out of time for an evaluation cutoff ``e`` when ``c + horizon_days <= e`` (purged).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from rollguard.errors import RollguardError
from rollguard.weeks import horizon_weeks

#: Entry-point group under which use cases register.
ENTRY_POINT_GROUP = "rollguard.usecases"
#: Entry-point group whose one entry names the use case run when ``ROLLGUARD_USECASE`` is unset
#: (Rollguard's own ``pyproject.toml`` nominates its first built-in use case there).
DEFAULT_ENTRY_POINT_GROUP = "rollguard.default_usecase"
#: The key column every row frame carries besides the entity key: the cutoff (datetime64[ns]).
CUTOFF_COLUMN = "cutoff"
#: Boolean column of every row frame: whether the label columns hold matured values.
LABEL_AVAILABLE_COLUMN = "label_available"

FeatureKind = Literal["numeric", "categorical"]
ScoringUnit = Literal["entity_at_cutoff", "event"]


class TaskType(enum.StrEnum):
    """What the model predicts. Decides the objective, the gate's metrics and the KPIs."""

    BINARY_CLASSIFICATION = "binary_classification"
    REGRESSION = "regression"


class UseCaseError(RollguardError):
    """A use case breaks its contract (missing entry point, wrong dtype, undeclared column, ...).

    The message names the use case, the field and the problem in one line.

    Attributes:
        usecase: the use case's name (or the name asked for).
        field: the declaration or column concerned (``features.recency_days``, ``label``, ...).
        problem: what is wrong, in words.
    """

    kind = "usecase"

    def __init__(self, usecase: str, field: str, problem: str) -> None:
        self.usecase = usecase
        self.field = field
        self.problem = problem
        super().__init__(f"use case {usecase!r}: {field}: {problem}")


@dataclass(frozen=True)
class FeatureSpec:
    """One model input.

    Attributes:
        name: column name in row frames and API requests.
        kind: ``numeric`` (float64) or ``categorical`` (pandas ``category`` with :attr:`categories`,
            fed to XGBoost's native categorical support).
        description: one sentence for API docs, the UI and dashboards.
        example: a typical value (a number, or one of :attr:`categories`).
        unit: unit of a numeric value (``days``, ``USD``, ``count``); empty when unitless.
        minimum, maximum: inclusive bounds of a numeric value (None: unbounded on that side).
        categories: categorical: the known levels, in the order of their codes.
    """

    name: str
    kind: FeatureKind
    description: str
    example: float | str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"


@dataclass(frozen=True)
class LabelSpec:
    """The target.

    Attributes:
        column: label column of row frames. Binary classification: ``Int8`` 0/1 with ``<NA>``
            before maturity; regression: ``float64`` with NaN before maturity.
        description: what the label means.
        horizon_days: days after the cutoff the label needs (0: known when its week is ingested).
        unit: regression: the label's unit (``EUR``); empty for a binary label.
        minimum, maximum: regression: plausible bounds of a prediction (out-of-range scores fail
            the gate's sanity check). Binary classification: scores are probabilities in [0, 1].
    """

    column: str
    description: str
    horizon_days: int = 0
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class ValueSpec:
    """Business value per row, the money the KPIs speak of.

    Attributes:
        column: ``float64`` column of row frames (NaN before the label matures).
        description: e.g. "revenue of the customer in the 28 days after the cutoff".
        unit: the money unit (``USD``, ``EUR``).
    """

    column: str
    description: str
    unit: str


@dataclass(frozen=True)
class SliceSpec:
    """A segment the gate checks on its own (non-inferiority per slice value).

    Attributes:
        name: the slice's name in reports (``customer_type``).
        column: a column of row frames whose values name the segments (``new``/``returning``).
        description: what the segments are.
    """

    name: str
    column: str
    description: str


@dataclass(frozen=True)
class TargetingSpec:
    """What the business does with the scores each week (the KPI definition).

    Attributes:
        budget: share of rows acted on, in (0, 1]: the top ``budget`` by score (binary
            classification); regression use cases report KPIs over all rows and ignore it.
        description: one sentence (``marketing contacts the top 10% of customers by score``).
        subject: plural noun for one row (``customers``, ``bookings``) in reports and dashboards.
    """

    budget: float
    description: str
    subject: str


@dataclass(frozen=True)
class BaselineSpec:
    """A naive predictor to show beside the model (regression KPIs and the demo).

    Attributes:
        name: short name (``historical_adr``).
        column: a numeric column of row frames holding the baseline's prediction.
        description: what it is.
    """

    name: str
    column: str
    description: str


@dataclass(frozen=True)
class History:
    """A use case's full record history, verified: the source the feed replays week by week.

    Attributes:
        records: one row per raw record, columns and dtypes of the use case's record schema.
        path: the file read.
        sha256: its SHA-256 (hex).
        source: where it came from (a distribution and version, or ``user file``).
        summary: figures for ``rollguard data info`` (counts, first and last dates, ...).
    """

    records: pd.DataFrame
    path: Path
    sha256: str
    source: str
    summary: Mapping[str, Any] = field(default_factory=dict)


class UseCase(ABC):
    """The declaration of one prediction problem. Subclass it, fill the class attributes, implement
    :meth:`load_history` and :meth:`build_rows`; register an instance under
    :data:`ENTRY_POINT_GROUP`.

    Class attributes (all required):
        name: the entry-point name (``churn``), lower case.
        title: human title (``Subscriber churn``).
        model_name: registered model name in the MLflow registry.
        task: :class:`TaskType`.
        scoring_unit: ``entity_at_cutoff`` or ``event`` (see the module docstring).
        entity_column: key of a scored row (``customer_id``, ``booking_id``), int64.
        record_schema: pandera schema of one landing file's typed records (coercing from text);
            its checks are the validation rules ingestion applies.
        record_id_column: unique id of a raw record (duplicates in a file are refused).
        record_time_column: datetime64 column whose ISO week a landing file covers.
        file_prefix: landing file names are ``<file_prefix><YYYY-Www>.csv``.
        features, label, value, slices, targeting, baselines: the declarations above.
        training_cutoffs: how many weekly cutoffs a model is fitted on by default.
        evaluation_cutoffs: how many newest matured cutoffs the gate pools for its evaluation rows.
        currency: the money unit of KPIs (usually ``value.unit``).
    """

    name: str
    title: str
    model_name: str
    task: TaskType
    scoring_unit: ScoringUnit
    entity_column: str
    record_schema: pa.DataFrameSchema
    record_id_column: str
    record_time_column: str
    file_prefix: str
    features: tuple[FeatureSpec, ...]
    label: LabelSpec
    value: ValueSpec
    slices: tuple[SliceSpec, ...] = ()
    targeting: TargetingSpec
    baselines: tuple[BaselineSpec, ...] = ()
    training_cutoffs: int = 8
    evaluation_cutoffs: int = 1

    # --- what a use case implements ------------------------------------------------------------
    @abstractmethod
    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        """Locate, verify (checksum) and parse the full record history.

        Args:
            path: a user's own file of the same shape; None means the use case's packaged source.
            expected_sha256: checksum the file must have; the packaged source is always verified
                against its own pinned checksum.

        Raises:
            rollguard.errors.DatasetError: missing, altered or unparseable source.
        """

    @abstractmethod
    def build_rows(
        self, records: pd.DataFrame, cutoff: date, *, label_available: bool
    ) -> pd.DataFrame:
        """Point-in-time rows at ``cutoff``.

        Args:
            records: every ingested record (columns of :attr:`record_schema`), any order.
            cutoff: a Monday.
            label_available: whether the label's weeks are all ingested (see
                :meth:`label_weeks`); when False the label and value columns are missing values.

        Returns:
            One row per scored unit, sorted by :attr:`entity_column`, with :attr:`entity_column`,
            :data:`CUTOFF_COLUMN`, every feature (float64 or category), the label and value
            columns, :data:`LABEL_AVAILABLE_COLUMN`, every slice and baseline column.
        """

    # --- derived, shared by every use case -----------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in model order."""
        return tuple(f.name for f in self.features)

    @property
    def categorical_features(self) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.is_categorical)

    @property
    def is_classification(self) -> bool:
        return self.task is TaskType.BINARY_CLASSIFICATION

    @property
    def record_columns(self) -> tuple[str, ...]:
        """Column names of a landing file, in file order."""
        return tuple(self.record_schema.columns)

    def record_dtypes(self) -> dict[str, str]:
        """``{column: pandas dtype name}`` of the record schema, in file order."""
        return {name: str(column.dtype) for name, column in self.record_schema.columns.items()}

    def empty_records(self) -> pd.DataFrame:
        """A record frame with no rows and the record schema's columns and dtypes."""
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in self.record_dtypes().items()})

    def feature(self, name: str) -> FeatureSpec:
        """The declaration of feature ``name``.

        Raises:
            KeyError: no such feature.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def label_weeks(self, cutoff: date) -> list[str]:
        """ISO weeks that must be ingested before the label at ``cutoff`` exists (empty when the
        label is known at once)."""
        return horizon_weeks(cutoff, self.label.horizon_days)

    def label_dtype(self) -> str:
        """``Int8`` (binary classification) or ``float64`` (regression)."""
        return "Int8" if self.is_classification else "float64"

    def feature_frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns of ``rows`` in model order, categoricals with the declared
        levels (unknown values become missing, which XGBoost routes like a missing value).

        Raises:
            UseCaseError: a declared feature is missing from ``rows``.
        """
        missing = [n for n in self.feature_names if n not in rows.columns]
        if missing:
            raise UseCaseError(self.name, f"features.{missing[0]}", "not produced by build_rows")
        out = rows.loc[:, list(self.feature_names)].copy()
        for spec in self.features:
            if spec.is_categorical:
                out[spec.name] = pd.Categorical(
                    out[spec.name].astype("object"), categories=list(spec.categories)
                )
            else:
                out[spec.name] = out[spec.name].astype("float64")
        return out

    def check_declaration(self) -> None:
        """Refuse a malformed declaration (at load).

        Raises:
            UseCaseError: naming the field and the problem.
        """
        check_declaration(self)

    def check_rows(self, rows: pd.DataFrame) -> None:
        """Refuse rows that break the declarations (at the first build and in ``usecase check``).

        Raises:
            UseCaseError: naming the field and the problem.
        """
        check_rows(self, rows)


# --- contract checks ----------------------------------------------------------------------------
_REQUIRED_ATTRIBUTES = (
    "name",
    "title",
    "model_name",
    "task",
    "scoring_unit",
    "entity_column",
    "record_schema",
    "record_id_column",
    "record_time_column",
    "file_prefix",
    "features",
    "label",
    "value",
    "targeting",
)


def check_declaration(usecase: UseCase) -> None:
    """Static checks of a use case's declarations (see :meth:`UseCase.check_declaration`)."""
    name = str(getattr(usecase, "name", "?"))
    for attr in _REQUIRED_ATTRIBUTES:
        if getattr(usecase, attr, None) in (None, "", ()):
            raise UseCaseError(name, attr, "is not declared")
    if not isinstance(usecase.task, TaskType):
        raise UseCaseError(
            name, "task", f"{usecase.task!r} is not one of {[t.value for t in TaskType]}"
        )
    if usecase.scoring_unit not in ("entity_at_cutoff", "event"):
        raise UseCaseError(
            name, "scoring_unit", f"{usecase.scoring_unit!r} is not entity_at_cutoff or event"
        )
    if not isinstance(usecase.record_schema, pa.DataFrameSchema):
        raise UseCaseError(name, "record_schema", "is not a pandera DataFrameSchema")
    for attr in ("record_id_column", "record_time_column"):
        column = getattr(usecase, attr)
        if column not in usecase.record_schema.columns:
            raise UseCaseError(name, attr, f"{column!r} is not a column of record_schema")
    seen: set[str] = set()
    for spec in usecase.features:
        _check_feature(name, spec)
        if spec.name in seen:
            raise UseCaseError(name, f"features.{spec.name}", "is declared twice")
        seen.add(spec.name)
    reserved = {usecase.entity_column, CUTOFF_COLUMN, LABEL_AVAILABLE_COLUMN, usecase.label.column}
    clash = seen & reserved
    if clash:
        raise UseCaseError(name, f"features.{sorted(clash)[0]}", "is also a key or label column")
    if usecase.label.horizon_days < 0:
        raise UseCaseError(name, "label.horizon_days", "is negative")
    if not 0 < usecase.targeting.budget <= 1:
        raise UseCaseError(name, "targeting.budget", f"{usecase.targeting.budget} is not in (0, 1]")
    for attr in ("training_cutoffs", "evaluation_cutoffs"):
        if int(getattr(usecase, attr)) < 1:
            raise UseCaseError(name, attr, "must be at least 1")


def _check_feature(name: str, spec: FeatureSpec) -> None:
    where = f"features.{spec.name}"
    if spec.kind not in ("numeric", "categorical"):
        raise UseCaseError(name, where, f"kind {spec.kind!r} is not numeric or categorical")
    if spec.is_categorical:
        if not spec.categories:
            raise UseCaseError(name, where, "a categorical feature declares no categories")
        if len(set(spec.categories)) != len(spec.categories):
            raise UseCaseError(name, where, "categories repeat a level")
        if str(spec.example) not in spec.categories:
            raise UseCaseError(name, where, f"example {spec.example!r} is not a declared category")
        return
    if isinstance(spec.example, str):
        raise UseCaseError(name, where, f"example {spec.example!r} of a numeric feature is text")
    low = -np.inf if spec.minimum is None else spec.minimum
    high = np.inf if spec.maximum is None else spec.maximum
    if low > high:
        raise UseCaseError(name, where, f"minimum {spec.minimum} is above maximum {spec.maximum}")
    if not low <= float(spec.example) <= high:
        raise UseCaseError(name, where, f"example {spec.example} is outside [{low}, {high}]")


def check_rows(usecase: UseCase, rows: pd.DataFrame) -> None:
    """Checks of built rows against the declarations (see :meth:`UseCase.check_rows`)."""
    name = usecase.name
    needed = {
        usecase.entity_column: "entity_column",
        CUTOFF_COLUMN: CUTOFF_COLUMN,
        LABEL_AVAILABLE_COLUMN: LABEL_AVAILABLE_COLUMN,
        usecase.label.column: "label",
        usecase.value.column: "value",
        **{s.column: f"slices.{s.name}" for s in usecase.slices},
        **{b.column: f"baselines.{b.name}" for b in usecase.baselines},
    }
    for column, field_name in needed.items():
        if column not in rows.columns:
            raise UseCaseError(name, field_name, f"column {column!r} is not produced by build_rows")
    _check_keys(usecase, rows)
    for spec in usecase.features:
        _check_feature_values(usecase, spec, rows)
    _check_label_values(usecase, rows)


def _check_keys(usecase: UseCase, rows: pd.DataFrame) -> None:
    """The entity column is int64, the cutoff datetime64, and no entity appears twice at a cutoff."""
    entity = rows[usecase.entity_column]
    if not pd.api.types.is_integer_dtype(entity):
        raise UseCaseError(
            usecase.name,
            "entity_column",
            f"{usecase.entity_column} has dtype {entity.dtype}, not int64",
        )
    if not pd.api.types.is_datetime64_any_dtype(rows[CUTOFF_COLUMN]):
        raise UseCaseError(
            usecase.name, CUTOFF_COLUMN, f"has dtype {rows[CUTOFF_COLUMN].dtype}, not datetime64"
        )
    twice = rows.duplicated([usecase.entity_column, CUTOFF_COLUMN])
    if twice.any():
        first = rows.loc[twice].iloc[0]
        raise UseCaseError(
            usecase.name,
            "entity_column",
            f"{usecase.entity_column} {first[usecase.entity_column]} appears more than once at "
            f"cutoff {pd.Timestamp(first[CUTOFF_COLUMN]).date()} ({int(twice.sum())} repeated rows)",
        )


def _check_feature_values(usecase: UseCase, spec: FeatureSpec, rows: pd.DataFrame) -> None:
    where = f"features.{spec.name}"
    if spec.name not in rows.columns:
        raise UseCaseError(usecase.name, where, "is declared but build_rows does not produce it")
    column = rows[spec.name]
    if spec.is_categorical:
        values = set(column.dropna().astype(str).unique())
        unknown = sorted(values - set(spec.categories))
        if unknown:
            raise UseCaseError(
                usecase.name, where, f"value {unknown[0]!r} is not a declared category"
            )
        return
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise UseCaseError(usecase.name, where, f"dtype {column.dtype} is not numeric")
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(values).any():
        raise UseCaseError(usecase.name, where, "holds an infinite value")
    finite = values[np.isfinite(values)]
    if finite.size and spec.minimum is not None and finite.min() < spec.minimum:
        raise UseCaseError(
            usecase.name,
            where,
            f"value {finite.min():g} is below the declared minimum {spec.minimum:g}",
        )
    if finite.size and spec.maximum is not None and finite.max() > spec.maximum:
        raise UseCaseError(
            usecase.name,
            where,
            f"value {finite.max():g} is above the declared maximum {spec.maximum:g}",
        )


def _check_label_values(usecase: UseCase, rows: pd.DataFrame) -> None:
    where = f"label.{usecase.label.column}"
    matured = rows.loc[rows[LABEL_AVAILABLE_COLUMN].astype(bool), usecase.label.column]
    if not pd.api.types.is_numeric_dtype(matured) or pd.api.types.is_bool_dtype(matured):
        raise UseCaseError(usecase.name, where, f"dtype {matured.dtype} is not numeric")
    values = matured.to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(values).any():
        raise UseCaseError(usecase.name, where, "is missing on rows marked label_available")
    if usecase.is_classification:
        odd = values[(values != 0) & (values != 1)]
        if odd.size:
            raise UseCaseError(
                usecase.name, where, f"value {odd[0]:g} does not fit binary classification (0 or 1)"
            )
    elif not np.isfinite(values).all():
        raise UseCaseError(usecase.name, where, "holds an infinite value")
    else:
        _check_label_bounds(usecase, where, values)


def _check_label_bounds(usecase: UseCase, where: str, values: np.ndarray) -> None:
    low, high = usecase.label.minimum, usecase.label.maximum
    if values.size and low is not None and values.min() < low:
        raise UseCaseError(
            usecase.name, where, f"value {values.min():g} is below the declared minimum {low:g}"
        )
    if values.size and high is not None and values.max() > high:
        raise UseCaseError(
            usecase.name, where, f"value {values.max():g} is above the declared maximum {high:g}"
        )


# --- discovery ----------------------------------------------------------------------------------
def available_usecases() -> dict[str, metadata.EntryPoint]:
    """Entry points of the group :data:`ENTRY_POINT_GROUP`, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def default_usecase_name() -> str:
    """The name of the use case run when none is chosen: the one entry of the group
    :data:`DEFAULT_ENTRY_POINT_GROUP`.

    Raises:
        UseCaseError: no installed distribution nominates one, or several do.
    """
    names = sorted({ep.name for ep in metadata.entry_points(group=DEFAULT_ENTRY_POINT_GROUP)})
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise UseCaseError(
            "?",
            "ROLLGUARD_USECASE",
            f"is unset and the default use case is ambiguous (entry points of "
            f"{DEFAULT_ENTRY_POINT_GROUP}: {found}); set ROLLGUARD_USECASE",
        )
    return names[0]


@lru_cache(maxsize=16)
def load_usecase(name: str) -> UseCase:
    """The use case registered as ``name``, its declaration checked (cached per process).

    Raises:
        UseCaseError: no such entry point (the message lists the registered ones), the entry point
            does not import, does not give a :class:`UseCase`, or its declaration is malformed.
    """
    found = available_usecases()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UseCaseError(
            name,
            "ROLLGUARD_USECASE",
            f"no use case registered under this name (registered: {known})",
        )
    try:
        target: Any = found[name].load()
    except Exception as exc:  # noqa: BLE001 - any import failure is the use case's to fix
        raise UseCaseError(
            name, "entry point", f"{found[name].value} does not import: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        usecase = target() if callable(target) and not isinstance(target, UseCase) else target
    except Exception as exc:  # noqa: BLE001 - a failing factory is the use case's to fix
        raise UseCaseError(
            name, "entry point", f"{found[name].value}() fails: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(usecase, UseCase):
        raise UseCaseError(
            name,
            "entry point",
            f"{found[name].value} gives {type(usecase).__name__}, not a UseCase",
        )
    if usecase.name != name:
        raise UseCaseError(name, "name", f"declares name {usecase.name!r}, registered as {name!r}")
    usecase.check_declaration()
    return usecase


UseCaseFactory = Callable[[], UseCase]
