"""Feature snapshots from the warehouse: ``rollguard features build --cutoff DATE``.

A snapshot is the use case's row frame at one cutoff (:meth:`rollguard.usecase.UseCase.build_rows`),
written as Parquet under ``warehouse/features/``; the label columns are filled only when every week of
the label horizon is ingested. Each snapshot records the batches it was built from
(:mod:`domain.lineage`); :func:`read_snapshot` returns a stored snapshot only while no late week
has made it stale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from domain import lineage
from domain.warehouse import accepted_batches, load_records
from rollguard.db.models import IngestionDecision
from rollguard.errors import RollguardError
from rollguard.files import write_atomic
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.weeks import check_cutoff, horizon_weeks, iso_week_label, parse_iso_week


@dataclass(frozen=True)
class SnapshotResult:
    """A written feature snapshot: where, how many rows, and whether labels exist.

    ``n_positive`` and ``base_rate`` (share of positive labels) are for binary classification;
    ``label_mean`` (the label's mean, in its unit) for both task types; all None before maturity.
    """

    cutoff: str
    path: str
    n_rows: int
    label_available: bool
    n_positive: int | None
    base_rate: float | None
    label_mean: float | None
    weeks_before_cutoff: int
    missing_weeks: list[str]
    batch_ids: list[str]


def snapshot_path(settings: Settings, cutoff: date) -> Path:
    """Parquet path of the snapshot at ``cutoff``."""
    return settings.warehouse_dir / "features" / f"cutoff={cutoff.isoformat()}.parquet"


def build_snapshot(
    settings: Settings, cutoff: date, *, engine: Engine | None = None
) -> SnapshotResult:
    """Build and write the feature/label snapshot at ``cutoff`` from the ingested warehouse.

    The week just before the cutoff must be ingested (features would otherwise describe an
    incomplete past). Weeks missing between the first ingested week and the cutoff (a quarantined
    file, say) are reported in ``missing_weeks``. The label is present only when every week of the
    horizon is ingested.

    Raises:
        ValueError: ``cutoff`` is not a Monday.
        RollguardError: nothing ingested before the cutoff, or the week before it is missing.
    """
    check_cutoff(cutoff)
    engine = engine or open_store(settings)
    batches = accepted_batches(settings, engine=engine)
    weeks = sorted({b.week for b in batches if b.week})
    before = [w for w in weeks if parse_iso_week(w) < cutoff]
    if not before:
        raise RollguardError(
            f"no purchases ingested before cutoff {cutoff}: run `rollguard data replay` and "
            "`rollguard data ingest` first"
        )
    previous = iso_week_label(cutoff - timedelta(days=7))
    if previous not in weeks:
        raise RollguardError(
            f"features at cutoff {cutoff} need week {previous} ingested; newest ingested week "
            f"before the cutoff is {before[-1]}"
        )
    expected, d = [], parse_iso_week(before[0])
    while d < cutoff:
        expected.append(iso_week_label(d))
        d += timedelta(days=7)
    missing = [w for w in expected if w not in set(weeks)]
    usecase = settings.usecase_spec
    matured = set(horizon_weeks(cutoff, settings.horizon_days)) <= set(weeks)
    frame = usecase.build_rows(
        load_records(settings, engine=engine, batches=batches), cutoff, label_available=matured
    )
    usecase.check_rows(frame)
    target = snapshot_path(settings, cutoff)
    buf = BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(target, buf.getvalue())
    until = lineage.window_end(cutoff, settings.horizon_days, labelled=matured)
    used = lineage.window_batches(batches, until)
    lineage.record(
        engine, kind=lineage.SNAPSHOT, cutoff=cutoff, until=until, batch_ids=used, n_rows=len(frame)
    )
    values = frame[usecase.label.column].to_numpy(dtype="float64", na_value=float("nan"))
    positives = int(values.sum()) if matured and usecase.is_classification else None
    return SnapshotResult(
        cutoff=cutoff.isoformat(),
        path=str(target),
        n_rows=len(frame),
        label_available=matured,
        n_positive=positives,
        base_rate=round(positives / len(frame), 6)
        if positives is not None and len(frame)
        else None,
        label_mean=round(float(values.mean()), 6) if matured and len(frame) else None,
        weeks_before_cutoff=len(before),
        missing_weeks=missing,
        batch_ids=used,
    )


def read_snapshot(
    settings: Settings,
    cutoff: date,
    *,
    engine: Engine,
    batches: Sequence[IngestionDecision] | None = None,
) -> pd.DataFrame | None:
    """The stored snapshot at ``cutoff`` while it is fresh: None when there is none, when it has no
    lineage (written before lineage existed) or when the accepted batches of its window changed
    since it was built (a late week; see :mod:`domain.lineage`). ``batches`` defaults to the
    ledger's accepted batches."""
    path = snapshot_path(settings, cutoff)
    if not path.exists():
        return None
    if batches is None:
        batches = accepted_batches(settings, engine=engine)
    return (
        pd.read_parquet(path)
        if lineage.is_fresh(engine, batches, lineage.SNAPSHOT, cutoff)
        else None
    )
