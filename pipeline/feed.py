"""The weekly feed: turn a use case's record history into one CSV per ISO week in the landing zone,
as a production feed would deliver them (``replay``), so that the stack runs as if time passed.

File format (what ingestion expects): UTF-8 CSV named ``<file_prefix>YYYY-Www.csv`` whose header is
the use case's record columns in schema order; dates are ``YYYY-MM-DD`` and every record's time
(``usecase.record_time_column``) lies inside the ISO week of the file name.

Where ``replay --weeks N`` continues (:func:`feed_position`): after the newest week that has an
accepted batch in the ingestion ledger, or a file this feed wrote itself (the feed's file name of a
week of the source, with exactly the bytes the feed renders for it: waiting in the landing zone, or
decided by ingestion). Any other file that names a week — a quarantined far-future week, a garbage
file called ``<prefix>_1998-W10.csv``, another system's ``backup_<prefix>_1998-W10.csv`` — never moves
the feed; the result lists it under ``ignored``. A replay that delivers nothing says why in
``note``, naming the week and the file that decided it.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from rollguard.db.models import IngestionDecision
from rollguard.files import sha256_file, write_atomic
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.usecase import UseCase
from rollguard.weeks import find_iso_week, parse_iso_week

#: Files listed in :func:`format_replay` under "ignored" (the JSON result lists them all).
_IGNORED_SHOWN = 5


@dataclass(frozen=True)
class ReplayResult:
    """What a replay delivered. ``written``: files created; ``unchanged``: already there with the
    same content; ``conflicts``: already there with other content (left as they are).

    With ``weeks``: ``after_week`` is the week the feed continued after and ``after_cause`` what
    put it there (see :func:`feed_position`); ``ignored`` names the files that name a later week
    but do not move the feed, each with why. ``note`` says why nothing was written (None when
    something was)."""

    landing_dir: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    newest_week: str | None = None
    weeks_available: int = 0
    after_week: str | None = None
    after_cause: str | None = None
    ignored: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class FeedPosition:
    """Where ``replay --weeks`` continues.

    Attributes:
        week: the newest week that moves the feed (None: the feed has delivered nothing yet).
        cause: what put it there, e.g. ``accepted batch <prefix>_1997-W10.csv``.
        delivered: weeks that move the feed, with their causes (every one only when asked for:
            otherwise the accepted weeks and the newest file this feed wrote after them).
        ignored: files that name a later week but move nothing, each as ``name: why``.
    """

    week: str | None
    cause: str | None
    delivered: dict[str, str]
    ignored: list[str]


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


def delivered_weeks(settings: Settings, path: Path | None = None) -> set[str]:
    """Weeks this feed counts as delivered: those with an accepted batch in the ingestion ledger,
    and those whose file this feed wrote (see :func:`feed_position`).

    Raises:
        DatasetError: the source log is missing, altered or unparseable.
    """
    records, labels, all_weeks = _weekly(settings, path)
    return set(_position(settings, records, labels, all_weeks, every=True).delivered)


def feed_position(settings: Settings, path: Path | None = None) -> FeedPosition:
    """Where ``replay --weeks`` continues, and why (module docstring).

    Raises:
        DatasetError: the source log is missing, altered or unparseable.
    """
    records, labels, all_weeks = _weekly(settings, path)
    return _position(settings, records, labels, all_weeks)


def _position(
    settings: Settings,
    records: pd.DataFrame,
    labels: pd.Series,
    all_weeks: list[str],
    *,
    every: bool = False,
) -> FeedPosition:
    usecase = settings.usecase_spec
    engine = open_store(settings)
    try:
        with Session(engine) as session:
            ledger = session.execute(
                select(
                    IngestionDecision.file_name,
                    IngestionDecision.content_sha256,
                    IngestionDecision.status,
                    IngestionDecision.reason_code,
                    IngestionDecision.week,
                ).order_by(IngestionDecision.id)
            ).all()
    finally:
        engine.dispose()
    waiting = _landing_files(settings.landing_dir)

    delivered: dict[str, str] = {}
    for name, _, status, _, week in ledger:
        if status == "accepted" and week:
            delivered[week] = f"accepted batch {name}"
    # Files this feed wrote: the feed's name of a source week with exactly the feed's bytes. A
    # quarantined one counts too: the feed delivered it, and the same bytes again would only be
    # skipped by the ledger. Newest first; unless every delivered week is asked for, the first
    # one found newer than the newest accepted week decides (rendering a week is the cost here).
    decided = {(name, sha): status for name, sha, status, _, _ in ledger}
    feed_name = {week_file_name(usecase, w): w for w in all_weeks}
    accepted_newest = max(delivered) if delivered else None
    candidates = ({n for n, *_ in ledger} | set(waiting)) & set(feed_name)
    for name in sorted(candidates, key=feed_name.__getitem__, reverse=True):
        week = feed_name[name]
        if week in delivered:
            continue
        if not every and accepted_newest is not None and week < accepted_newest:
            break
        sha = hashlib.sha256(render_week(usecase, records[labels == week])).hexdigest()
        if name in waiting and sha256_file(waiting[name]) == sha:
            delivered[week] = f"{name}, written by this feed, waiting in the landing zone"
        elif (name, sha) in decided:
            delivered[week] = f"{name}, written by this feed, {decided[name, sha]} by ingestion"
        else:
            continue
        if not every:
            break

    newest = max(delivered) if delivered else None
    why_not: dict[str, str] = {name: "in the landing zone, not ingested yet" for name in waiting}
    for name, _, status, reason, _ in ledger:  # the newest decision about a name wins
        why_not[name] = status + (f" ({reason})" if reason else "")
    ignored = []
    for name, why in sorted(why_not.items()):
        week = find_iso_week(name)
        if week is None or why == "accepted" or (newest is not None and week <= newest):
            continue
        ignored.append(f"{name}: {why}; not an accepted batch nor a file this feed wrote")
    return FeedPosition(
        week=newest,
        cause=None if newest is None else delivered[newest],
        delivered=delivered,
        ignored=ignored,
    )


def _landing_files(landing: Path) -> dict[str, Path]:
    """Regular, not hidden files directly in the landing zone, by name (what ingestion reads)."""
    if not landing.exists():
        return {}
    found = {}
    for path in landing.iterdir():
        try:
            regular = stat.S_ISREG(path.lstat().st_mode)
        except FileNotFoundError:
            continue
        if regular and not path.name.startswith("."):
            found[path.name] = path
    return found


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

    position = None
    if until is not None:
        targets = [w for w in all_weeks if parse_iso_week(w) <= until]
    else:
        position = _position(settings, records, labels, all_weeks)
        newest = position.week
        pending = [w for w in all_weeks if newest is None or w > newest]
        targets = pending[: weeks or 0]

    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    unchanged: list[str] = []
    conflicts: list[str] = []
    for week in targets:
        target = settings.landing_dir / week_file_name(usecase, week)
        content = render_week(usecase, records[labels == week])
        if target.exists():
            (unchanged if target.read_bytes() == content else conflicts).append(target.name)
            continue
        write_atomic(target, content)
        written.append(target.name)
    note = None
    if not written:
        note = _why_nothing(all_weeks, until, position, unchanged, conflicts)
    return ReplayResult(
        landing_dir=str(settings.landing_dir),
        written=written,
        unchanged=unchanged,
        conflicts=conflicts,
        newest_week=max(targets) if targets else None,
        weeks_available=len(all_weeks),
        after_week=None if position is None else position.week,
        after_cause=None if position is None else position.cause,
        ignored=[] if position is None else position.ignored,
        note=note,
    )


def _why_nothing(
    all_weeks: list[str],
    until: date | None,
    position: FeedPosition | None,
    unchanged: list[str],
    conflicts: list[str],
) -> str:
    """Why a replay wrote no file, naming the week and the file that decided it."""
    if not all_weeks:
        return "nothing to deliver: the source has no complete week"
    if unchanged or conflicts:
        parts = []
        if unchanged:
            parts.append(
                f"{len(unchanged)} file(s) already in the landing zone with the same content "
                f"({unchanged[0]}{' ...' if len(unchanged) > 1 else ''})"
            )
        if conflicts:
            parts.append(
                f"{len(conflicts)} file(s) in the landing zone hold other content and were kept: "
                + ", ".join(conflicts)
            )
        return "nothing new delivered: " + "; ".join(parts)
    if until is not None:
        return (
            f"nothing to deliver: the source's first complete week, {all_weeks[0]}, starts after "
            f"the week of {until.isoformat()}"
        )
    assert position is not None and position.week is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
    last = all_weeks[-1]
    if position.week == last:
        return (
            f"nothing to deliver: the source has no week after {last}; the feed stands at "
            f"{position.week} ({position.cause})"
        )
    return (
        f"nothing to deliver: the feed stands at {position.week} ({position.cause}), after the "
        f"source's last complete week {last}"
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
    if result.after_week is not None and not result.note:  # the note names the position too
        lines.append(f"continued after {result.after_week} ({result.after_cause})")
    lines += [f"  conflict (kept as is): {name}" for name in result.conflicts]
    if result.note:
        lines.append(result.note)
    if result.ignored:
        lines.append(f"ignored (they do not move the feed): {len(result.ignored)}")
        lines += [f"  {line}" for line in result.ignored[:_IGNORED_SHOWN]]
        if len(result.ignored) > _IGNORED_SHOWN:
            lines.append(f"  ... {len(result.ignored) - _IGNORED_SHOWN} more (--json lists all)")
    return "\n".join(lines)
