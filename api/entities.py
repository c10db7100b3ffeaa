"""Latest features of a known entity (a customer, a booking...), from the newest feature
snapshot Parquet file (``<warehouse>/features/cutoff=YYYY-MM-DD.parquet``, written by
:func:`domain.snapshots.build_snapshot`): one row per scored unit, keyed by the use case's
``entity_column``."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from api.parquet import parquet_columns, read_parquet
from domain.scoring import targeted_mask
from rollguard.usecase import LABEL_AVAILABLE_COLUMN, UseCase


class NoSnapshot(Exception):
    """No feature snapshot exists yet."""


class UnknownEntity(Exception):
    """The entity is not in the newest snapshot."""


@dataclass(frozen=True)
class EntityFeatures:
    """One entity's row at ``cutoff`` (YYYY-MM-DD): ``features`` (name -> float, or str for a
    categorical feature; None when missing), and the realized label when it has matured."""

    entity_id: int
    cutoff: str
    features: dict[str, Any]
    label_available: bool = False
    label: float | None = None


def newest_snapshot(features_dir: Path) -> Path | None:
    """The snapshot file with the latest cutoff in its name, or None."""
    files = sorted(features_dir.glob("cutoff=*.parquet"))
    return files[-1] if files else None


def _cell(value: Any, categorical: bool) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value) if categorical else float(value)


class SnapshotFeatures:
    """Reads the newest snapshot, cached until a newer file (or a rewrite) appears.

    Args:
        features_dir: the folder of ``cutoff=YYYY-MM-DD.parquet`` files.
        usecase: gives the key (``entity_column``), the features and the label column.
    """

    def __init__(self, features_dir: Path, usecase: UseCase) -> None:
        self.features_dir = features_dir
        self.usecase = usecase
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._frame: pd.DataFrame | None = None
        self._cutoff = ""

    def table(self) -> tuple[pd.DataFrame, str, tuple[str, int]]:
        """The newest snapshot: frame indexed by the entity column (columns: the features, and
        the label and ``label_available`` when the file has them), its cutoff (YYYY-MM-DD) and a
        key that changes with the file.

        Raises:
            NoSnapshot: no snapshot file exists.
        """
        frame, cutoff = self._load()
        assert self._key is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
        return frame, cutoff, self._key

    def _load(self) -> tuple[pd.DataFrame, str]:
        path = newest_snapshot(self.features_dir)
        if path is None:
            raise NoSnapshot(
                f"no feature snapshot under {self.features_dir} yet: run `rollguard score` (builds "
                "the snapshot at the scoring cutoff, the Monday after the newest ingested week, "
                "and has the champion score it; `--week YYYY-Www` for another week), or "
                "`rollguard features build --cutoff YYYY-MM-DD`, or let the weekly DAG run"
            )
        key = (str(path), path.stat().st_mtime_ns)
        uc = self.usecase
        with self._lock:
            if key != self._key or self._frame is None:
                present = set(parquet_columns(path))
                extra = [c for c in (uc.label.column, LABEL_AVAILABLE_COLUMN) if c in present]
                frame = read_parquet(path, [uc.entity_column, *uc.feature_names, *extra])
                self._frame = frame.set_index(uc.entity_column)
                self._key = key
                self._cutoff = path.stem.removeprefix("cutoff=")
            return self._frame, self._cutoff

    def lookup(self, entity_id: int) -> EntityFeatures:
        """The entity's row in the newest snapshot.

        Raises:
            NoSnapshot: no snapshot file exists.
            UnknownEntity: the entity has no row in it.
        """
        frame, cutoff = self._load()
        try:
            row = frame.loc[entity_id]
        except KeyError:
            raise UnknownEntity(self.unknown(entity_id, cutoff)) from None
        if isinstance(row, pd.DataFrame):  # a duplicated key: the first row, as the ranking does
            row = row.iloc[0]
        uc = self.usecase
        available = bool(row.get(LABEL_AVAILABLE_COLUMN, False))
        label = _cell(row.get(uc.label.column), False) if available else None
        return EntityFeatures(
            entity_id=int(entity_id),
            cutoff=cutoff,
            features={f.name: _cell(row[f.name], f.is_categorical) for f in uc.features},
            label_available=available and label is not None,
            label=label,
        )

    def unknown(self, entity_id: int, cutoff: str) -> str:
        """The message for an entity without a row at ``cutoff``."""
        return (
            f"{self.usecase.entity_column} {entity_id} is not in the feature snapshot at "
            f"cutoff {cutoff}"
        )


@dataclass(frozen=True)
class TargetingPosition:
    """Where one entity falls in this week's ranking of the snapshot by the serving model.

    ``rank`` is 1 for the highest score; ``targeted`` is True when the entity is in the top
    ``budget`` share (``n_targeted = ceil(budget * n_entities)`` rows, ties broken by snapshot
    order), exactly as :func:`domain.scoring.targeted_mask` picks the weekly batch.
    """

    rank: int
    n_entities: int
    n_targeted: int
    targeted: bool
    budget: float


class Targeting:
    """The snapshot scored by one model version, ranked, cached until the snapshot file or the
    version changes (one cache entry: scoring ~24,000 rows takes tens of ms). Classification
    use cases only: a regression has no targeting rank."""

    def __init__(self, snapshots: SnapshotFeatures, budget: float) -> None:
        self.snapshots = snapshots
        self.budget = budget
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None
        self._ranked: pd.DataFrame | None = None

    def position(self, entity_id: int, model: Any) -> TargetingPosition:
        """Rank of ``entity_id`` among all rows of the newest snapshot scored by ``model`` (an
        :class:`api.model.ServingModel`: ``version``, ``feature_names``, ``to_matrix``,
        ``predict``).

        Raises:
            NoSnapshot: no snapshot exists.
            UnknownEntity: the entity is not in it.
            api.model.NonFiniteScore: the model returned NaN/infinity.
        """
        frame, cutoff, file_key = self.snapshots.table()
        key = (file_key, model.version, self.budget)
        with self._lock:
            if key != self._key or self._ranked is None:
                self._ranked = self._rank(frame, model)
                self._key = key
            ranked = self._ranked
        try:
            row = ranked.loc[entity_id]
        except KeyError:
            raise UnknownEntity(self.snapshots.unknown(entity_id, cutoff)) from None
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        return TargetingPosition(
            rank=int(row["rank"]),
            n_entities=len(ranked),
            n_targeted=int(ranked["targeted"].sum()),
            targeted=bool(row["targeted"]),
            budget=self.budget,
        )

    def _rank(self, frame: pd.DataFrame, model: Any) -> pd.DataFrame:
        uc = self.snapshots.usecase
        if uc.categorical_features:
            rows = [
                {f.name: _cell(v, f.is_categorical) for f, v in zip(uc.features, r, strict=True)}
                for r in frame.loc[:, list(uc.feature_names)].itertuples(index=False)
            ]
            matrix = model.to_matrix(rows)
        else:
            matrix = frame.loc[:, list(model.feature_names)].to_numpy(np.float32)
        scores = np.asarray(model.predict(matrix), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(len(scores), dtype=np.int64)
        rank[order] = np.arange(1, len(scores) + 1)
        return pd.DataFrame(
            {"rank": rank, "targeted": targeted_mask(scores, self.budget)}, index=frame.index
        )
