"""Weekly batch scoring: the champion scores every row of the snapshot at the scoring cutoff, and
the scores are kept as that week's production predictions.

Predictions are Parquet files ``warehouse/predictions/cutoff=YYYY-MM-DD/version=N.parquet`` (one
row per scored unit: the use case's entity column, ``score``, ``rank``, ``targeted``), written once
per cutoff and version (idempotent), and rewritten only by a backfill when a late week made them
stale. Each records the batches its features were built from (:mod:`domain.lineage`). The guard
and the KPI reports read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from domain import lineage
from domain.metrics import targeted_mask
from domain.warehouse import accepted_batches
from rollguard.files import write_atomic
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.usecase import UseCase


@dataclass(frozen=True)
class BatchScores:
    """A written batch of production predictions."""

    cutoff: str
    model_version: str
    path: str
    n_rows: int
    n_targeted: int
    created: bool  # False when the file existed already


def predictions_path(settings: Settings, cutoff: date, version: str) -> Path:
    """Parquet path of the predictions of ``version`` at ``cutoff``."""
    return (
        settings.warehouse_dir
        / "predictions"
        / f"cutoff={cutoff.isoformat()}"
        / f"version={version}.parquet"
    )


def score_frame(
    usecase: UseCase, features: pd.DataFrame, predict: Any, budget: float
) -> pd.DataFrame:
    """Predictions for a snapshot's rows: the entity column, ``score`` (a probability, or the
    predicted label value for regression), ``rank`` (1 = highest score) and ``targeted`` (top
    ``budget`` share)."""
    scores = np.asarray(predict(usecase.feature_frame(features)), dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    return pd.DataFrame(
        {
            usecase.entity_column: features[usecase.entity_column].to_numpy(),
            "score": scores,
            "rank": rank,
            "targeted": targeted_mask(scores, budget),
        }
    )


def score_batch(
    settings: Settings,
    cutoff: date,
    *,
    model_version: str,
    predict: Any,
    features: pd.DataFrame,
    batch_ids: Sequence[str] | None = None,
    replace: bool = False,
    engine: Engine | None = None,
) -> BatchScores:
    """Score ``features`` (the snapshot at ``cutoff``) with ``predict`` of ``model_version`` and
    keep the result with its lineage; an existing file for the same cutoff and version is kept as
    it is unless ``replace`` (a backfill rescoring rebuilt features).

    ``batch_ids`` are the accepted batches ``features`` were built from (the snapshot's lineage);
    the predictions record those of them before ``cutoff`` (None: the ledger's current batches
    before ``cutoff``).
    """
    target = predictions_path(settings, cutoff, model_version)
    if target.exists() and not replace:
        frame = pd.read_parquet(target)
        created = False
    else:
        frame = score_frame(settings.usecase_spec, features, predict, settings.targeting_budget)
        buf = BytesIO()
        frame.to_parquet(buf, index=False)
        write_atomic(target, buf.getvalue())
        created = True
        engine = engine or open_store(settings)
        window = lineage.window_batches(accepted_batches(settings, engine=engine), cutoff)
        # Predictions read the weeks before the cutoff only: a labelled snapshot's lineage also
        # names its horizon weeks, which the predictions never read.
        batch_ids = window if batch_ids is None else [b for b in window if b in set(batch_ids)]
        lineage.record(
            engine,
            kind=lineage.PREDICTIONS,
            cutoff=cutoff,
            until=cutoff,
            batch_ids=batch_ids,
            model_name=settings.model_name,
            model_version=str(model_version),
            n_rows=len(frame),
        )
    return BatchScores(
        cutoff=cutoff.isoformat(),
        model_version=str(model_version),
        path=str(target),
        n_rows=len(frame),
        n_targeted=int(frame["targeted"].sum()),
        created=created,
    )


def load_predictions(settings: Settings, cutoff: date, version: str) -> pd.DataFrame | None:
    """The predictions of ``version`` at ``cutoff``, or None when that batch was never scored."""
    path = predictions_path(settings, cutoff, version)
    return pd.read_parquet(path) if path.exists() else None


def scored_cutoffs(settings: Settings, version: str) -> list[date]:
    """Cutoffs at which ``version`` produced production predictions, oldest first."""
    root = settings.warehouse_dir / "predictions"
    if not root.exists():
        return []
    out = []
    for folder in root.glob("cutoff=*"):
        if (folder / f"version={version}.parquet").exists():
            out.append(date.fromisoformat(folder.name.split("=", 1)[1]))
    return sorted(out)
