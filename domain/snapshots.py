"""Feature snapshots from the warehouse: ``rollguard features build --cutoff DATE``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

from sqlalchemy import Engine

from domain.warehouse import ingested_weeks, load_transactions
from rollguard.errors import RollguardError
from rollguard.files import write_atomic
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.weeks import check_cutoff, iso_week_label, parse_iso_week
from usecases.cdnow.features import LABEL, build_features, label_matured


@dataclass(frozen=True)
class SnapshotResult:
    """A written feature snapshot: where, how many customers, and whether labels exist."""

    cutoff: str
    path: str
    n_customers: int
    label_available: bool
    n_positive: int | None
    base_rate: float | None
    weeks_before_cutoff: int
    missing_weeks: list[str]


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
    weeks = ingested_weeks(settings, engine=engine)
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
    matured = label_matured(cutoff, weeks, settings.horizon_days)
    frame = build_features(
        load_transactions(settings, engine=engine),
        cutoff,
        label_available=matured,
        horizon_days=settings.horizon_days,
    )
    target = snapshot_path(settings, cutoff)
    buf = BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(target, buf.getvalue())
    positives = int(frame[LABEL].sum()) if matured else None
    return SnapshotResult(
        cutoff=cutoff.isoformat(),
        path=str(target),
        n_customers=len(frame),
        label_available=matured,
        n_positive=positives,
        base_rate=round(positives / len(frame), 6) if matured and len(frame) else None,
        weeks_before_cutoff=len(before),
        missing_weeks=missing,
    )
