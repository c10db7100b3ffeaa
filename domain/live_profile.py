"""What a model version's live traffic is compared with: its score reference and its training
profile (docs/design.md, "Live signals").

Both are small JSON documents kept as tags of the registered version, so that a model server reads
them with the version it loads (one registry call, no artifact download):

- :data:`SCORE_REFERENCE_TAG` — a :class:`ScoreReference`: the decile edges of the scores a version
  gave the gate's evaluation rows, and the share of those rows per bin. Written by the gate
  (``source`` ``gated``) for every challenger it evaluates; a version that becomes champion without
  passing the gate (``promote --force``) gets a copy of the reference of the champion it replaced
  (``source`` ``replaced``): the last score distribution the gate approved for this population.
- :data:`TRAINING_PROFILE_TAG` — a :class:`TrainingProfile`: per feature, the bins of its training
  values and their shares. Numeric: the training deciles with open outer bins, plus a missing bin,
  and the training ``[minimum, maximum]``. Categorical: the declared levels in code order, plus an
  unseen bin and a missing bin. Written when the version is registered.

Bins are what :func:`domain.metrics.population_stability_index` uses (quantile bins of the
reference, outer edges open, tied quantiles merged), so a live PSI computed from these shares and
the batch PSI of the same samples are the same number (tests/unit/test_live_profile.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from domain.metrics import reference_bins
from rollguard.usecase import UseCase

#: Model-version tag holding a :class:`ScoreReference` (JSON).
SCORE_REFERENCE_TAG = "rollguard.live.score_reference"
#: Model-version tag holding a :class:`TrainingProfile` (JSON).
TRAINING_PROFILE_TAG = "rollguard.live.training_profile"
#: Quantile bins of a reference (deciles): the guard policy's ``psi_bins`` default.
DEFAULT_BINS = 10

ReferenceSource = Literal["gated", "replaced"]
_Model = TypeVar("_Model", bound=BaseModel)


class LiveProfileError(ValueError):
    """A score reference or training profile tag is not valid JSON of the expected shape."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoreReference(_Frozen):
    """The score distribution a version is compared with on live traffic.

    Attributes:
        version: the registered version whose gate-time scores these are.
        source: ``gated`` (the version's own) or ``replaced`` (it reached champion without the
            gate; these are the scores of the champion it replaced, :attr:`version`).
        edges: inner bin edges, increasing (at most ``bins - 1``; tied quantiles merged); bin ``i``
            is ``[edges[i-1], edges[i])`` with ``edges[-1] = -inf`` and ``edges[len] = +inf``.
        shares: share of reference scores per bin, ``len(edges) + 1`` values summing to 1.
        n: reference rows.
        cutoffs: the evaluation cutoffs the rows came from (ISO dates), for the record.
    """

    version: str = Field(min_length=1)
    source: ReferenceSource
    edges: tuple[float, ...]
    shares: tuple[float, ...]
    n: int = Field(ge=1)
    cutoffs: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ScoreReference:
        _check_bins(self.edges, self.shares, extra=0)
        return self

    def bin_codes(self, scores: np.ndarray) -> np.ndarray:
        """Bin index of each score: shape ``(n,)`` in, int64 ``(n,)`` out, in ``[0, len(edges)]``."""
        return np.searchsorted(np.asarray(self.edges), scores, side="right")

    def to_json(self) -> str:
        """The tag value."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ScoreReference:
        """Parse a tag value.

        Raises:
            LiveProfileError: not JSON of this shape (the message names the field).
        """
        return _parse(cls, text, SCORE_REFERENCE_TAG)

    def as_replaced(self) -> ScoreReference:
        """This reference for a version that replaced :attr:`version` without passing the gate:
        same bins, shares and :attr:`version` (whose scores they are), ``source`` ``replaced``."""
        return self.model_copy(update={"source": "replaced"})


class FeatureProfile(_Frozen):
    """One feature's training distribution.

    Attributes:
        name: the feature.
        kind: ``numeric`` or ``categorical``.
        edges: numeric: inner decile edges of the training values (tied quantiles merged); empty
            for a categorical feature.
        levels: categorical: the levels in code order; empty for a numeric feature.
        shares: numeric ``len(edges) + 2`` values (bins, then missing); categorical
            ``len(levels) + 2`` (levels, then unseen, then missing); they sum to 1.
        minimum, maximum: numeric: the training range of non-missing values (None when every
            training value was missing).
    """

    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    shares: tuple[float, ...]
    minimum: float | None = None
    maximum: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureProfile:
        if self.kind == "numeric":
            _check_bins(self.edges, self.shares, extra=1)
        else:
            if self.edges:
                raise ValueError("a categorical feature has levels, not edges")
            if len(self.shares) != len(self.levels) + 2:
                raise ValueError(f"{len(self.shares)} shares for {len(self.levels)} levels + 2")
            _check_shares(self.shares)
        return self

    @property
    def missing_bin(self) -> int:
        """Index of the missing bin (the last)."""
        return len(self.shares) - 1

    def bin_codes(self, values: np.ndarray) -> np.ndarray:
        """Numeric values (float, NaN = missing), shape ``(n,)``, to bin indices, int64 ``(n,)``.

        Raises:
            ValueError: called on a categorical feature (use :meth:`level_bins`).
        """
        if self.kind != "numeric":
            raise ValueError(f"{self.name} is categorical: bin its levels with level_bins")
        values = np.asarray(values, dtype=np.float64)
        codes = np.searchsorted(np.asarray(self.edges), values, side="right")
        codes[np.isnan(values)] = self.missing_bin
        return codes

    def level_bins(self, model_levels: Sequence[str]) -> np.ndarray:
        """Map from a model's category codes to this profile's bins, for a categorical feature.

        Returns:
            int64 array of ``len(model_levels) + 1``: entry ``k`` is the bin of model code ``k``
            (its level's bin, or the unseen bin when the training profile has no such level); the
            last entry is the missing bin (index with it for NaN codes).
        """
        position = {level: i for i, level in enumerate(self.levels)}
        unseen = len(self.levels)
        mapped = [position.get(str(level), unseen) for level in model_levels]
        return np.asarray([*mapped, self.missing_bin], dtype=np.int64)

    def out_of_range(self, values: np.ndarray) -> np.ndarray:
        """Numeric: boolean ``(n,)``, True where a value is outside the training range (missing
        values are not out of range)."""
        values = np.asarray(values, dtype=np.float64)
        if self.minimum is None or self.maximum is None:
            return np.zeros(values.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return (values < self.minimum) | (values > self.maximum)


class TrainingProfile(_Frozen):
    """Per-feature training distributions of one version (in the use case's feature order)."""

    n: int = Field(ge=1)
    features: tuple[FeatureProfile, ...]

    def feature(self, name: str) -> FeatureProfile | None:
        """The profile of ``name``, or None."""
        return next((f for f in self.features if f.name == name), None)

    def to_json(self) -> str:
        """The tag value."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> TrainingProfile:
        """Parse a tag value.

        Raises:
            LiveProfileError: not JSON of this shape (the message names the field).
        """
        return _parse(cls, text, TRAINING_PROFILE_TAG)


# --- building -------------------------------------------------------------------------------------
def score_reference(
    scores: np.ndarray,
    *,
    version: str,
    cutoffs: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
) -> ScoreReference:
    """The ``gated`` reference of ``version`` from its scores on the gate's evaluation rows.

    Args:
        scores: shape ``(n,)``, finite, ``n >= 1`` (probabilities or predictions in the label's
            unit: the bins are quantiles, so the unit does not matter).
        version: the gated version.
        cutoffs: the evaluation cutoffs (ISO dates).
        bins: quantile bins (deciles by default).

    Raises:
        ValueError: empty or non-finite scores, ``bins < 2``.
    """
    edges, shares = reference_bins(np.asarray(scores, dtype=np.float64).ravel(), bins)
    return ScoreReference(
        version=str(version),
        source="gated",
        edges=tuple(edges),
        shares=tuple(shares),
        n=int(np.asarray(scores).size),
        cutoffs=tuple(cutoffs),
    )


def training_profile(
    features: pd.DataFrame, usecase: UseCase, *, bins: int = DEFAULT_BINS
) -> TrainingProfile:
    """The training profile of a version from its training features.

    Args:
        features: the model's input frame (:meth:`rollguard.usecase.UseCase.feature_frame`):
            numeric columns float, categorical columns pandas ``category`` with the declared
            levels; at least one row.
        usecase: the declarations (feature names, kinds, levels).
        bins: quantile bins of numeric features (deciles by default).

    Raises:
        ValueError: no rows, or a declared feature is missing from ``features``.
    """
    if features.empty:
        raise ValueError("a training profile needs at least one row")
    out = []
    for spec in usecase.features:
        if spec.name not in features.columns:
            raise ValueError(f"feature {spec.name!r} is not in the training frame")
        column = features[spec.name]
        if spec.is_categorical:
            out.append(_categorical_profile(spec.name, column, spec.categories))
        else:
            out.append(_numeric_profile(spec.name, column, bins))
    return TrainingProfile(n=len(features), features=tuple(out))


def _numeric_profile(name: str, column: pd.Series, bins: int) -> FeatureProfile:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    present = values[np.isfinite(values)]
    missing_share = 1.0 - present.size / values.size
    if present.size == 0:
        return FeatureProfile(name=name, kind="numeric", shares=(0.0, 1.0))
    edges, shares = reference_bins(present, bins)
    scaled = [float(s) * (1.0 - missing_share) for s in shares]
    return FeatureProfile(
        name=name,
        kind="numeric",
        edges=tuple(edges),
        shares=(*scaled, missing_share),
        minimum=float(present.min()),
        maximum=float(present.max()),
    )


def _categorical_profile(name: str, column: pd.Series, levels: Sequence[str]) -> FeatureProfile:
    text = column.astype("object")
    missing = text.isna().to_numpy()
    counts = text[~missing].astype(str).value_counts()
    n = len(column)
    level_shares = [float(counts.get(level, 0)) / n for level in levels]
    known = set(levels)
    unseen = float(sum(c for v, c in counts.items() if v not in known)) / n
    return FeatureProfile(
        name=name,
        kind="categorical",
        levels=tuple(levels),
        shares=(*level_shares, unseen, float(missing.mean())),
    )


# --- validation helpers -----------------------------------------------------------------------------
def _check_shares(shares: Sequence[float]) -> None:
    if any(not math.isfinite(s) or s < 0 for s in shares):
        raise ValueError("shares must be finite and >= 0")
    if abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"shares sum to {sum(shares):.6f}, not 1")


def _check_bins(edges: Sequence[float], shares: Sequence[float], *, extra: int) -> None:
    if any(not math.isfinite(e) for e in edges) or any(
        b <= a for a, b in zip(edges, edges[1:], strict=False)
    ):
        raise ValueError("edges must be finite and strictly increasing")
    if len(shares) != len(edges) + 1 + extra:
        raise ValueError(
            f"{len(shares)} shares for {len(edges)} edges (expected {len(edges) + 1 + extra})"
        )
    _check_shares(shares)


def _parse(cls: type[_Model], text: str, tag: str) -> _Model:
    try:
        return cls.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "value"
        raise LiveProfileError(f"tag {tag}: {where}: {first.get('msg', 'invalid')}") from None
