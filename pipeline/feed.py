"""The weekly feed: turn a use case's record history into one CSV per ISO week in the landing zone,
as a production feed would deliver them (``replay``), so that the stack runs as if time passed.

File format (what ingestion expects): UTF-8 CSV named ``<file_prefix>YYYY-Www.csv`` whose header is
the use case's record columns in schema order; dates are ``YYYY-MM-DD`` and every record's time
(``usecase.record_time_column``) lies inside the ISO week of the file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from rollguard.files import write_atomic
from rollguard.settings import Settings
from rollguard.usecase import UseCase
from rollguard.weeks import find_iso_week, parse_iso_week


@dataclass(frozen=True)
class ReplayResult:
    """What a replay delivered. ``written``: files created; ``unchanged``: already there with the
    same content; ``conflicts``: already there with other content (left as they are)."""

    landing_dir: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    newest_week: str | None = None
    weeks_available: int = 0


def week_file_name(usecase: UseCase, week: str) -> str:
    """Landing file name of ``week`` (``<file_prefix>1997-W01.csv``)."""
    return f"{usecase.file_prefix}{week}.csv"


def render_week(usecase: UseCase, rows: pd.DataFrame) -> bytes:
    """CSV bytes of one week's records in schema column order, sorted by the record id
    (deterministic); datetime columns as ``YYYY-MM-DD``."""
    out = rows.sort_values(usecase.record_id_column).loc[:, list(usecase.record_columns)].copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


def delivered_weeks(settings: Settings) -> set[str]:
    """Weeks this feed has already delivered: files in the landing zone or moved to quarantine."""
    weeks: set[str] = set()
    for folder in (settings.landing_dir, settings.quarantine_dir):
        if folder.exists():
            for path in folder.rglob(f"*{settings.usecase_spec.file_prefix}*.csv"):
                week = find_iso_week(path.name)
                if week:
                    weeks.add(week)
    return weeks


def replay(
    settings: Settings,
    *,
    until: date | None = None,
    weeks: int | None = None,
    path: Path | None = None,
) -> ReplayResult:
    """Deliver weekly files into the landing zone.

    Args:
        until: deliver every week whose Monday is on or before this day's week.
        weeks: deliver the next N weeks after the newest already delivered.
        path: a file of the use case's source shape instead of its packaged one (default:
            ``settings.dataset_path``).

    Only complete weeks are delivered (see the comment in the body).

    Idempotent: a file already present with the same bytes is left alone; one with other bytes is
    reported as a conflict and never overwritten.

    Raises:
        ValueError: neither or both of ``until`` and ``weeks``.
        DatasetError: the source log is missing, altered or unparseable.
    """
    if (until is None) == (weeks is None):
        raise ValueError("give exactly one of until or weeks")
    usecase = settings.usecase_spec
    records, labels, all_weeks = _weekly(settings, path)

    if until is not None:
        targets = [w for w in all_weeks if parse_iso_week(w) <= until]
    else:
        done = delivered_weeks(settings)
        newest = max(done) if done else None
        pending = [w for w in all_weeks if newest is None or w > newest]
        targets = pending[: weeks or 0]

    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    result = ReplayResult(landing_dir=str(settings.landing_dir), weeks_available=len(all_weeks))
    for week in targets:
        target = settings.landing_dir / week_file_name(usecase, week)
        content = render_week(usecase, records[labels == week])
        if target.exists():
            (result.unchanged if target.read_bytes() == content else result.conflicts).append(
                target.name
            )
            continue
        write_atomic(target, content)
        result.written.append(target.name)
    newest_week = max(targets) if targets else None
    return ReplayResult(
        landing_dir=result.landing_dir,
        written=result.written,
        unchanged=result.unchanged,
        conflicts=result.conflicts,
        newest_week=newest_week,
        weeks_available=len(all_weeks),
    )


def _weekly(settings: Settings, path: Path | None) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """``(records, ISO week label per record, complete weeks oldest first)`` of the history."""
    usecase = settings.usecase_spec
    history = usecase.load_history(path or settings.dataset_path, settings.dataset_sha256)
    records = history.records
    times = records[usecase.record_time_column]
    iso = times.dt.isocalendar()
    labels = iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    # A feed delivers a week once it has ended: a trailing week that the log does not cover to its
    # Sunday (e.g. a log that ends on a Tuesday) is never delivered, so that no label window is
    # taken for complete when it is not.
    last_day = times.max().date()
    weeks = sorted(w for w in labels.unique() if parse_iso_week(w) + timedelta(days=6) <= last_day)
    return records, labels, weeks


def available_weeks(settings: Settings, path: Path | None = None) -> list[str]:
    """The complete ISO weeks of the use case's history that a replay can deliver, oldest first.

    Raises:
        rollguard.errors.DatasetError: the history is missing, altered or unparseable.
    """
    return _weekly(settings, path)[2]


def format_replay(result: ReplayResult) -> str:
    """One readable paragraph about a replay."""
    lines = [
        f"landing zone: {result.landing_dir}",
        f"written: {len(result.written)}  unchanged: {len(result.unchanged)}  "
        f"conflicts: {len(result.conflicts)}  (newest week {result.newest_week or '-'}, "
        f"{result.weeks_available} weeks in the log)",
    ]
    lines += [f"  conflict (kept as is): {name}" for name in result.conflicts]
    return "\n".join(lines)
