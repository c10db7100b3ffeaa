"""Read the warehouse: the accepted batches named by the ingestion ledger (never a stray file)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rollguard.db.models import IngestionDecision
from rollguard.settings import Settings
from rollguard.store import open_store


def accepted_batches(
    settings: Settings, *, engine: Engine | None = None
) -> list[IngestionDecision]:
    """Ledger rows of accepted batches, oldest week first (detached ORM objects)."""
    engine = engine or open_store(settings)
    with Session(engine, expire_on_commit=False) as session:
        rows = session.scalars(
            select(IngestionDecision)
            .where(IngestionDecision.status == "accepted")
            .order_by(IngestionDecision.week, IngestionDecision.id)
        ).all()
        session.expunge_all()
        return list(rows)


def ingested_weeks(settings: Settings, *, engine: Engine | None = None) -> list[str]:
    """Sorted ISO week labels (``1997-W05``) with an accepted batch."""
    return sorted({b.week for b in accepted_batches(settings, engine=engine) if b.week})


def load_records(
    settings: Settings,
    *,
    engine: Engine | None = None,
    batches: Sequence[IngestionDecision] | None = None,
) -> pd.DataFrame:
    """All accepted records of the settings' use case: one row per record with the columns and
    dtypes of its record schema plus ``batch_id``, sorted by the record time and id. Empty (typed)
    when nothing has been accepted. ``batches`` (from :func:`accepted_batches`) pins the batches
    read, so a caller can record exactly what it read (:mod:`domain.lineage`)."""
    usecase = settings.usecase_spec
    if batches is None:
        batches = accepted_batches(settings, engine=engine)
    frames = [pd.read_parquet(b.warehouse_path) for b in batches]
    if not frames:
        return usecase.empty_records().assign(batch_id=pd.Series(dtype="object"))
    out = pd.concat(frames, ignore_index=True)
    order = [usecase.record_time_column, usecase.record_id_column]
    return out.sort_values(order, kind="stable").reset_index(drop=True)
