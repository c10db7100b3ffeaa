"""Latest features of a known customer, from the newest feature snapshot Parquet file
(``<warehouse>/features/cutoff=YYYY-MM-DD.parquet``, written by
:func:`domain.snapshots.build_snapshot`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from domain.scoring import score_frame
from usecases.cdnow.features import FEATURE_COLUMNS


class NoSnapshot(Exception):
    """No feature snapshot exists yet."""


class UnknownCustomer(Exception):
    """The customer is not in the newest snapshot."""


@dataclass(frozen=True)
class CustomerFeatures:
    """One customer's feature row (``FEATURE_COLUMNS`` → float) at ``cutoff`` (YYYY-MM-DD)."""

    customer_id: int
    cutoff: str
    features: dict[str, float]


def newest_snapshot(features_dir: Path) -> Path | None:
    """The snapshot file with the latest cutoff in its name, or None."""
    files = sorted(features_dir.glob("cutoff=*.parquet"))
    return files[-1] if files else None


class SnapshotFeatures:
    """Reads the newest snapshot, cached until a newer file (or a rewrite) appears."""

    def __init__(self, features_dir: Path) -> None:
        self.features_dir = features_dir
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._frame: pd.DataFrame | None = None
        self._cutoff = ""

    def table(self) -> tuple[pd.DataFrame, str, tuple[str, int]]:
        """The newest snapshot: frame indexed by ``customer_id`` (one row per customer, columns
        :data:`FEATURE_COLUMNS`), its cutoff (YYYY-MM-DD) and a key that changes with the file.

        Raises:
            NoSnapshot: no snapshot file exists.
        """
        frame, cutoff = self._load()
        assert self._key is not None
        return frame, cutoff, self._key

    def _load(self) -> tuple[pd.DataFrame, str]:
        path = newest_snapshot(self.features_dir)
        if path is None:
            raise NoSnapshot(
                f"no feature snapshot under {self.features_dir}: run `rollguard features build`"
            )
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key != self._key or self._frame is None:
                frame = pd.read_parquet(path, columns=["customer_id", *FEATURE_COLUMNS])
                self._frame = frame.set_index("customer_id")
                self._key = key
                self._cutoff = path.stem.removeprefix("cutoff=")
            return self._frame, self._cutoff

    def lookup(self, customer_id: int) -> CustomerFeatures:
        """The customer's features in the newest snapshot.

        Raises:
            NoSnapshot: no snapshot file exists.
            UnknownCustomer: the customer has no row in it.
        """
        frame, cutoff = self._load()
        try:
            row = frame.loc[customer_id]
        except KeyError:
            raise UnknownCustomer(
                f"customer {customer_id} is not in the feature snapshot at cutoff {cutoff}"
            ) from None
        return CustomerFeatures(
            customer_id=int(customer_id),
            cutoff=cutoff,
            features={c: float(row[c]) for c in FEATURE_COLUMNS},
        )


@dataclass(frozen=True)
class TargetingPosition:
    """Where one customer falls in this week's ranking of the snapshot by the serving model.

    ``rank`` is 1 for the highest score; ``targeted`` is True when the customer is in the top
    ``budget`` share (``n_targeted = ceil(budget * n_customers)`` rows, ties broken by snapshot
    order), exactly as :func:`domain.scoring.targeted_mask` picks the weekly batch.
    """

    rank: int
    n_customers: int
    n_targeted: int
    targeted: bool
    budget: float


class Targeting:
    """The snapshot scored by one model version, ranked, cached until the snapshot file or the
    version changes (one cache entry: scoring ~24,000 CDNOW customers takes tens of ms)."""

    def __init__(self, snapshots: SnapshotFeatures, budget: float) -> None:
        self.snapshots = snapshots
        self.budget = budget
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None
        self._ranked: pd.DataFrame | None = None

    def position(
        self,
        customer_id: int,
        version: str,
        predict: Callable[[np.ndarray], np.ndarray],
        feature_names: tuple[str, ...],
    ) -> TargetingPosition:
        """Rank of ``customer_id`` among all customers of the newest snapshot, scored with
        ``predict`` (float32 matrix in ``feature_names`` order → probabilities) of ``version``.

        Raises:
            NoSnapshot: no snapshot exists.
            UnknownCustomer: the customer is not in it.
            api.model.NonFiniteScore: the model returned NaN/infinity.
        """
        frame, cutoff, file_key = self.snapshots.table()
        key = (file_key, version, self.budget)
        with self._lock:
            if key != self._key or self._ranked is None:
                features = frame.reset_index()
                ranked = score_frame(
                    features,
                    lambda x: predict(x.loc[:, list(feature_names)].to_numpy(np.float32)),
                    self.budget,
                )
                self._ranked = ranked.set_index("customer_id")
                self._key = key
            ranked = self._ranked
        try:
            row = ranked.loc[customer_id]
        except KeyError:
            raise UnknownCustomer(
                f"customer {customer_id} is not in the feature snapshot at cutoff {cutoff}"
            ) from None
        return TargetingPosition(
            rank=int(row["rank"]),
            n_customers=len(ranked),
            n_targeted=int(ranked["targeted"].sum()),
            targeted=bool(row["targeted"]),
            budget=self.budget,
        )
