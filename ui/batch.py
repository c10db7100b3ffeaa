"""Batch scoring of an uploaded CSV of feature rows through the API, with an error per row.

The CSV has a header naming the model's features (any order; the names come from the API's
``GET /v1/usecase``); other columns (an id, say) are carried through to the output untouched.
Numeric cells that are not finite numbers, and empty cells, are reported here (JSON cannot carry
them); categorical cells are sent as text. Every other check is the API's: rows the API refuses
(a value out of bounds, say) are reported with the API's field and problem, and the remaining rows
are scored.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ui.client import ApiError, RollguardClient
from ui.formatting import UseCaseView


class BatchFileError(ValueError):
    """The file as a whole cannot be scored (not a CSV, no rows, feature columns missing)."""


@dataclass(frozen=True)
class RowError:
    """A problem with one data row: ``row`` is 1-based (the header is not counted; the file
    line is ``row + 1``), ``field`` the column, ``problem`` what is wrong."""

    row: int
    field: str
    problem: str


@dataclass
class BatchResult:
    """The scored table (input columns + ``score``, ``model_version``, ``error``), the row
    errors, and the model versions that scored the rows (one, unless the champion moved while
    the batch was being sent)."""

    table: pd.DataFrame
    errors: list[RowError] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        return int(self.table["score"].notna().sum())


def read_csv(path: Path, view: UseCaseView) -> pd.DataFrame:
    """The uploaded CSV as strings (nothing converted yet).

    Raises:
        BatchFileError: not readable as CSV text, no data rows, or a feature column missing.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BatchFileError(f"not a readable CSV file: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in view.feature_names if c not in frame.columns]
    if missing:
        raise BatchFileError(
            "feature columns missing from the header: "
            + ", ".join(missing)
            + f" (the file has: {', '.join(frame.columns) or 'no columns'})"
        )
    if frame.empty:
        raise BatchFileError("the file has a header but no data rows")
    return frame


def parse_rows(
    frame: pd.DataFrame, view: UseCaseView
) -> tuple[dict[int, dict[str, Any]], list[RowError]]:
    """Feature rows keyed by 0-based position (numbers, or text for categorical features), and
    the cells that are empty or (numeric) not finite numbers."""
    rows: dict[int, dict[str, Any]] = {}
    errors: list[RowError] = []
    categorical = {f["name"] for f in view.features if f["kind"] == "categorical"}
    records = frame.loc[:, view.feature_names].to_dict("records")
    for i, record in enumerate(records):
        row: dict[str, Any] = {}
        bad = False
        for name in view.feature_names:
            text = str(record[name]).strip()
            if text == "":
                errors.append(RowError(i + 1, name, "missing value"))
                bad = True
                continue
            if name in categorical:
                row[name] = text
                continue
            try:
                value = float(text)
            except ValueError:
                errors.append(RowError(i + 1, name, f"not a number: {text[:40]!r}"))
                bad = True
                continue
            if not math.isfinite(value):
                errors.append(RowError(i + 1, name, "must be a finite number"))
                bad = True
                continue
            row[name] = value
        if not bad:
            rows[i] = row
    return rows, errors


def _row_of(field_path: str, positions: list[int]) -> tuple[int, str] | None:
    """``rows.3.orders_4w`` of a request holding ``positions`` → (0-based position, field)."""
    parts = field_path.split(".")
    if len(parts) >= 2 and parts[0] == "rows" and parts[1].isdigit():
        index = int(parts[1])
        if index < len(positions):
            return positions[index], ".".join(parts[2:]) or "row"
    return None


def score_csv(
    path: Path, client: RollguardClient, view: UseCaseView, *, chunk_rows: int
) -> BatchResult:
    """Score every valid row of the CSV at ``path`` through ``client`` (``/v1/predict``),
    ``chunk_rows`` rows per request.

    A chunk the API refuses with row-level validation errors is sent again without those rows
    (at most once per refused row, so this ends). Returns the table with ``score`` (a probability
    or a predicted value, as the use case says; empty for rows in error), ``model_version``, for a
    use case with categorical features ``warning`` (an unseen category scored as missing), and
    ``error`` columns.

    Raises:
        BatchFileError: the file as a whole is unusable.
        ApiError: the API failed in a way that is not about one row (timeout, unreachable,
            not ready, too large, ...); nothing is returned in that case.
    """
    frame = read_csv(path, view)
    rows, errors = parse_rows(frame, view)
    scores: dict[int, float] = {}
    versions: dict[int, str] = {}
    warnings: dict[int, list[str]] = {}
    positions = sorted(rows)
    for start in range(0, len(positions), chunk_rows):
        pending = positions[start : start + chunk_rows]
        while pending:
            try:
                answer = client.predict([rows[p] for p in pending])
            except ApiError as exc:
                located = [_row_of(d["field"], pending) for d in exc.details]
                if exc.kind != "validation" or not located or None in located:
                    raise
                refused = set()
                for (position, name), d in zip(located, exc.details, strict=True):  # type: ignore[misc]
                    errors.append(RowError(position + 1, name, d["problem"]))
                    refused.add(position)
                pending = [p for p in pending if p not in refused]
                continue
            for p, s in zip(pending, answer["scores"], strict=True):
                scores[p] = float(s)
                versions[p] = str(answer["model_version"])
            for w in answer.get("warnings") or []:
                located_warning = _row_of(w["field"], pending)
                if located_warning is not None:
                    position, name = located_warning
                    warnings.setdefault(position, []).append(f"{name}: {w['problem']}")
            break
    errors.sort(key=lambda e: (e.row, e.field))
    by_row: dict[int, list[str]] = {}
    for e in errors:
        by_row.setdefault(e.row - 1, []).append(f"{e.field}: {e.problem}")
    table = frame.copy()
    table["score"] = [scores.get(i) for i in range(len(frame))]
    table["model_version"] = [versions.get(i, "") for i in range(len(frame))]
    if any(f["kind"] == "categorical" for f in view.features):
        # Scored rows the API warned about (an unseen category scored as missing).
        table["warning"] = ["; ".join(warnings.get(i, [])) for i in range(len(frame))]
    table["error"] = ["; ".join(by_row.get(i, [])) for i in range(len(frame))]
    return BatchResult(table, errors, sorted(set(versions.values())))


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """The scored table as UTF-8 CSV (scores with full float precision)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue().encode()


def errors_frame(errors: list[RowError]) -> pd.DataFrame:
    """Row errors as a table: ``row`` (1-based data row), ``line`` (file line), field, problem."""
    return pd.DataFrame(
        [(e.row, e.row + 1, e.field, e.problem) for e in errors],
        columns=["row", "line", "field", "problem"],
    )
