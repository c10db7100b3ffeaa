"""Latest features of a known customer, from the newest feature snapshot Parquet file
(``<warehouse>/features/cutoff=YYYY-MM-DD.parquet``, written by
:func:`pipeline.snapshots.build_snapshot`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.features import FEATURE_COLUMNS


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
