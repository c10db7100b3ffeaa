"""``rollguard usecase check NAME``: run a use case's contract checks on a sample of its own data.

The checks, in order (the first broken one is raised as :class:`rollguard.usecase.UseCaseError`,
one line naming the use case, the field and the problem):

1. the declaration (:meth:`rollguard.usecase.UseCase.check_declaration`, done at load);
2. the history loads and its checksum verifies (:meth:`~rollguard.usecase.UseCase.load_history`);
3. the history's records pass the record schema, and the first ``weeks`` weekly files rendered by
   the feed pass ingestion's validation (header, types, rules, week, duplicate ids) unchanged;
4. rows built at the cutoffs of those weeks (labels matured where the sample allows) carry every
   declared feature, slice and baseline column, with the declared dtypes, bounds and categories, and
   labels that fit the task type (:meth:`~rollguard.usecase.UseCase.check_rows`);
5. the model inputs (:meth:`~rollguard.usecase.UseCase.feature_frame`) have one column per feature.

Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from pipeline.feed import render_week, week_file_name
from pipeline.ingest import validate_file
from rollguard.settings import Settings
from rollguard.usecase import History, UseCase, UseCaseError
from rollguard.weeks import horizon_weeks, parse_iso_week


def check_usecase(
    usecase: UseCase, settings: Settings, *, weeks: int = 8, path: Path | None = None
) -> dict[str, Any]:
    """Run the checks (module docstring) on the first ``weeks`` complete weeks of the history.

    Returns:
        A summary: the use case, its task, the history's size and checksum, the weeks and rows
        checked, and the label's mean over matured rows.

    Raises:
        UseCaseError: the first broken check, naming the field and the problem.
        rollguard.errors.DatasetError: the history is missing, altered or unparseable.
    """
    history = usecase.load_history(path, None if path is None else settings.dataset_sha256)
    if not isinstance(history, History) or not isinstance(history.records, pd.DataFrame):
        raise UseCaseError(
            usecase.name,
            "load_history",
            f"returned {type(history).__name__}, not a History holding a DataFrame of records",
        )
    records = _validated_records(usecase, history.records)
    sample = _sample_weeks(usecase, records, weeks)
    _check_landing_files(usecase, records, sample, settings.max_file_bytes)
    rows = _check_rows_at_cutoffs(usecase, records, sample)
    label = rows.loc[rows["label_available"].astype(bool), usecase.label.column]
    return {
        "usecase": usecase.name,
        "title": usecase.title,
        "task": usecase.task.value,
        "scoring_unit": usecase.scoring_unit,
        "history_records": len(records),
        "history_sha256": history.sha256,
        "weeks_checked": sample,
        "rows_checked": len(rows),
        "matured_rows": int(label.size),
        "label_mean": None if label.empty else round(float(label.astype("float64").mean()), 6),
        "features": list(usecase.feature_names),
        "ok": True,
    }


def format_check(result: dict[str, Any]) -> str:
    """Readable lines of :func:`check_usecase`'s summary."""
    return "\n".join(
        [
            f"use case {result['usecase']} ({result['title']}): contract holds",
            f"  task {result['task']}, scoring unit {result['scoring_unit']}, "
            f"{len(result['features'])} features",
            f"  history: {result['history_records']:,} records, sha256 {result['history_sha256']}",
            f"  weeks checked: {', '.join(result['weeks_checked'])}",
            f"  rows built: {result['rows_checked']:,} ({result['matured_rows']:,} with labels; "
            f"label mean {result['label_mean']})",
        ]
    )


def _validated_records(usecase: UseCase, records: pd.DataFrame) -> pd.DataFrame:
    try:
        return usecase.record_schema.validate(records, lazy=True)
    except pa.errors.SchemaErrors as exc:
        first = exc.failure_cases.iloc[0]
        raise UseCaseError(
            usecase.name,
            f"record_schema.{first['column']}",
            f"the history's record at index {first['index']} fails {first['check']} "
            f"(value {first['failure_case']!r})",
        ) from None


def _sample_weeks(usecase: UseCase, records: pd.DataFrame, n: int) -> list[str]:
    iso = records[usecase.record_time_column].dt.isocalendar()
    labels = (iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)).unique()
    weeks = sorted(labels)
    if not weeks:
        raise UseCaseError(usecase.name, "load_history", "the history has no records")
    return weeks[:n]


def _check_landing_files(
    usecase: UseCase, records: pd.DataFrame, weeks: list[str], max_bytes: int
) -> None:
    iso = records[usecase.record_time_column].dt.isocalendar()
    labels = iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    with tempfile.TemporaryDirectory() as tmp:
        for week in weeks:
            target = Path(tmp) / week_file_name(usecase, week)
            target.write_bytes(render_week(usecase, records[labels == week]))
            verdict = validate_file(target, max_bytes, usecase)
            if not verdict.ok:
                raise UseCaseError(
                    usecase.name,
                    f"record_schema.{verdict.column or 'file'}",
                    f"the feed's own file for {week} is refused by ingestion "
                    f"({verdict.reason_code} at line {verdict.line}: {verdict.reason_detail})",
                )


def _check_rows_at_cutoffs(
    usecase: UseCase, records: pd.DataFrame, weeks: list[str]
) -> pd.DataFrame:
    frames = []
    for week in weeks[1:] + [_next_week(weeks[-1])]:
        cutoff = parse_iso_week(week)
        matured = set(horizon_weeks(cutoff, usecase.label.horizon_days)) <= set(weeks)
        rows = usecase.build_rows(records, cutoff, label_available=matured)
        if not isinstance(rows, pd.DataFrame):
            raise UseCaseError(
                usecase.name, "build_rows", f"returned {type(rows).__name__}, not a DataFrame"
            )
        usecase.check_rows(rows)
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    if rows.empty:
        raise UseCaseError(usecase.name, "build_rows", f"no rows at the cutoffs of {weeks}")
    inputs = usecase.feature_frame(rows)
    if list(inputs.columns) != list(usecase.feature_names):
        raise UseCaseError(
            usecase.name, "features", "model inputs do not follow the declared order"
        )
    return rows


def _next_week(week: str) -> str:
    monday = parse_iso_week(week) + timedelta(days=7)
    year, number, _ = monday.isocalendar()
    return f"{year}-W{number:02d}"
