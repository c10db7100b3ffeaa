"""Ingestion: validate each new landing file, accept its rows into the warehouse (Parquet
partitioned by ISO week) or move the whole file to quarantine with a machine-readable reason.

Rules (every decision lands in the ``ingestion_ledger`` table of the monitoring store):

* A file is identified by its content (SHA-256): a renamed copy of ingested data is recorded once
  as ``duplicate`` and adds nothing. A file name + content already in the ledger is skipped, so
  re-running ingestion changes nothing.
* A bad file is moved to ``quarantine/`` beside a ``.reason.json``; it is never deleted and never
  stops the other files of the run.
* One accepted batch per ISO week: a second, different file for an accepted week is quarantined
  (``week_already_ingested``); corrections are an operator's decision, not a silent double count.

Reading a file (the format: UTF-8 CSV, a BOM tolerated, a header naming the use case's record
columns in any order, one record per line):

* A compressed file (gzip, zip, bzip2, xz or zstd, told by its leading bytes whatever its name) is
  quarantined as ``compressed``, never unpacked: the size limit, the content hash and the ledger are
  about the bytes that landed, and an archive can hold several members or expand without bound.
* The CSV is read with the :mod:`csv` module, strictly (RFC 4180 quoting: a quoted field may hold
  commas, doubled quotes and line breaks; a quote left open is an error), never by a parser that
  could infer an index column. Every field is stripped of surrounding white space. Blank lines
  (empty or white space only) are skipped, before the header too.
* Every record must have as many fields as the header (``wrong_field_count`` otherwise: a trailing
  comma on every row is caught on the first record, not read as an index).
* Every line a reason names is the **physical** line of the file, 1-based, counting the header,
  blank lines and the extra lines of records whose quoted fields span lines; lines end at ``\n``,
  ``\r\n`` or ``\r``. A record that spans lines is named by the line it starts on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollguard.db.models import IngestionDecision
from rollguard.files import sha256_file, write_atomic
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.usecase import UseCase
from rollguard.weeks import find_iso_week, parse_iso_week

#: Longest field accepted, in characters: no record of a weekly file needs more, and a longer one
#: (a runaway export) would be stored and served as it is.
MAX_FIELD_CHARS = 10_000

#: Every reason a file can be quarantined for.
REASON_CODES = (
    "bad_filename",  # no ISO week (YYYY-Www) in the file name
    "too_large",  # above ROLLGUARD_MAX_FILE_BYTES
    "empty_file",  # zero bytes
    "compressed",  # gzip, zip, bzip2, xz or zstd bytes (whatever the name): never unpacked
    "bad_encoding",  # not UTF-8
    "schema_mismatch",  # header lacks, adds or repeats columns, or not a CSV table (quoting)
    "header_only",  # a header and no rows
    "wrong_field_count",  # a record with more or fewer fields than the header
    "bad_type",  # a value that does not parse as its column's type
    "negative_value",  # a negative amount or count (a use case's check named so)
    "out_of_range",  # a value outside its declared range (a use case's check named so)
    "unknown_category",  # a level the use case does not know (a use case's check named so)
    "invalid_value",  # any other rule of the use case's record schema
    "missing_value",  # an empty field where the record schema allows none
    "too_long",  # a field longer than MAX_FIELD_CHARS characters
    "date_outside_week",  # a date outside the ISO week of the file name
    "duplicate_rows",  # a transaction_id more than once
    "week_already_ingested",  # another file for this week was accepted before
    "not_a_regular_file",  # a symlink, folder, FIFO or device: moved aside, never followed or read
    "week_in_future",  # the file's ISO week starts after today (UTC): a mislabelled file
)


@dataclass(frozen=True)
class Verdict:
    """Outcome of validating one file: ``rows`` when valid, else a reason code and detail."""

    week: str | None
    rows: pd.DataFrame | None = None
    reason_code: str | None = None
    reason_detail: str | None = None
    line: int | None = None
    column: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason_code is None


@dataclass(frozen=True)
class FileOutcome:
    """What ingestion did with one file."""

    file: str
    status: str  # accepted | quarantined | duplicate | skipped
    batch_id: str
    week: str | None = None
    n_rows: int | None = None
    reason_code: str | None = None
    reason_detail: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """All outcomes of one ingestion run, by status."""

    accepted: list[FileOutcome] = field(default_factory=list)
    quarantined: list[FileOutcome] = field(default_factory=list)
    duplicates: list[FileOutcome] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)


def _bad(
    week: str | None, code: str, detail: str, line: int | None = None, column: str | None = None
) -> Verdict:
    return Verdict(week=week, reason_code=code, reason_detail=detail, line=line, column=column)


def validate_file(path: Path, max_bytes: int, usecase: UseCase) -> Verdict:
    """Validate one landing file (see the module docstring for the format and :data:`REASON_CODES`).

    Args:
        path: the landing file; its name must hold the ISO week ``YYYY-Www``.
        max_bytes: the size limit (``ROLLGUARD_MAX_FILE_BYTES``).
        usecase: whose record columns and record schema the file must follow.

    Returns:
        A :class:`Verdict` whose ``rows`` hold the typed records (columns and dtypes of
        ``usecase.record_schema``, one row per record in file order, index ``0..n-1``) when the file
        is valid. Otherwise the first problem found, by stage (name and size, bytes, CSV structure,
        record schema, the feed's own rules) and within a stage by line: its reason code, a detail,
        the physical 1-based line (header = line 1, blank lines counted) and the column where they
        apply. Never raises for a file's content.
    """
    week = find_iso_week(path.name)
    if week is None:
        return _bad(None, "bad_filename", f"no ISO week (YYYY-Www) in the file name {path.name!r}")
    try:
        monday = parse_iso_week(week)
    except ValueError as exc:
        return _bad(None, "bad_filename", str(exc))
    today = datetime.now(UTC).date()
    if monday > today:
        # Accepting it would make every later replayed or real week look old: the warehouse's
        # newest week decides the next cutoff.
        return _bad(week, "week_in_future", f"{week} starts on {monday}, after today ({today})")
    size = path.stat().st_size
    if size > max_bytes:
        return _bad(week, "too_large", f"{size} bytes is above the limit of {max_bytes} bytes")
    if size == 0:
        return _bad(week, "empty_file", "the file has zero bytes")
    text = _decode(path.read_bytes(), week)
    if isinstance(text, Verdict):
        return text
    expected = list(usecase.record_columns)
    table = _read_table(text, expected, week)
    if isinstance(table, Verdict):
        return table
    return _check_records(usecase, table.frame(expected), table.lines, week, monday)


#: Leading bytes of the compressed formats a landing file may arrive in by mistake: gzip, zip (a
#: local file header, an empty archive, a spanned archive), xz and zstd. bzip2 is :data:`_BZIP2`.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)

#: bzip2: ``BZh``, the block size ``1``-``9``, then the magic number of a block or of the end of
#: the stream (``BZh`` alone is text a CSV header could start with).
_BZIP2 = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")

#: A line break as the CSV reader counts physical lines (universal newlines).
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _compression_of(raw: bytes) -> str | None:
    """The compressed format ``raw`` starts in (``gzip``, ``zip``, ``bzip2``, ``xz``, ``zstd``), told
    by its leading bytes, or None for anything else (plain text among it)."""
    for magic, name in _MAGIC:
        if raw.startswith(magic):
            return name
    return "bzip2" if _BZIP2.match(raw) else None


def _decode(raw: bytes, week: str) -> str | Verdict:
    """The text of a landing file, or the verdict ``compressed`` (the format named) or
    ``bad_encoding`` (the first byte that is not UTF-8, its offset and physical line)."""
    fmt = _compression_of(raw)
    if fmt is not None:
        return _bad(
            week, "compressed", f"the file is {fmt}-compressed; land it uncompressed as CSV"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _bad(
            week,
            "bad_encoding",
            f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            line=len(_LINE_BREAK.findall(raw, 0, exc.start)) + 1,
        )


@dataclass(frozen=True)
class _Table:
    """A landing file read as CSV: its column names (stripped), each record's fields (stripped,
    in header order, as many as the header's) and the physical line each record starts on."""

    header: list[str]
    records: list[list[str]]
    lines: list[int]

    def frame(self, columns: list[str]) -> pd.DataFrame:
        """The records as text columns in ``columns`` order (each one a header name); row ``i``
        (index label ``i``, a ``RangeIndex``) is the record on physical line ``lines[i]``."""
        at = [self.header.index(c) for c in columns]
        data = {c: [r[i] for r in self.records] for c, i in zip(columns, at, strict=True)}
        return pd.DataFrame(data, columns=columns, dtype=str)


def _read_table(text: str, expected: list[str], week: str) -> _Table | Verdict:
    """Read ``text`` as a strict CSV table whose header names the ``expected`` columns.

    Blank lines (empty or white space only) are skipped wherever they are, and counted.

    Returns:
        A :class:`_Table` with at least one record, or the :class:`Verdict` of the first problem,
        by physical line: ``schema_mismatch`` (no header, the header's columns, a quoting error),
        ``wrong_field_count`` or ``too_long`` (the record's starting line), or ``header_only``.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    line = 1  # the physical line the next record starts on
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            return _csv_problem(str(exc), week, line)
        if fields is None:
            break
        start, line = line, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        fields = [f.strip() for f in fields]
        if header is None:
            header = fields
            problem = _header_problem(header, expected, week, start)
        else:
            problem = _record_problem(fields, header, week, start)
            records.append(fields)
            lines.append(start)
        if problem is not None:
            return problem
    if header is None:
        return _bad(week, "schema_mismatch", "no header: the file holds only blank lines")
    if not records:
        return _bad(week, "header_only", "a header and no rows")
    return _Table(header, records, lines)


def _csv_problem(message: str, week: str, line: int) -> Verdict:
    """The verdict for a :class:`csv.Error` raised reading the record that starts on ``line``: a
    field beyond the reader's limit (:func:`csv.field_size_limit`, 131,072 characters; raising it
    would change a process-wide setting) is ``too_long`` without a column, any other error
    (a quote never closed, text after a closing quote) is ``schema_mismatch``."""
    if message.startswith("field larger than field limit"):
        return _bad(
            week,
            "too_long",
            f"a field holds more than {csv.field_size_limit():,} characters "
            f"(at most {MAX_FIELD_CHARS:,})",
            line=line,
        )
    if message == "unexpected end of data":
        message = "a quote opened in this record is never closed"
    return _bad(week, "schema_mismatch", f"not a CSV table: {message}", line=line)


def _header_problem(header: list[str], expected: list[str], week: str, line: int) -> Verdict | None:
    """``schema_mismatch`` when the header lacks, adds or repeats a column, else None."""
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    twice = sorted({c for c in header if header.count(c) > 1})
    if not (missing or extra or twice):
        return None
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if extra:
        hint = " (an empty name: a trailing comma?)" if "" in extra else ""
        parts.append(f"unexpected columns {extra}{hint}")
    if twice:
        parts.append(f"columns named more than once {twice}")
    return _bad(week, "schema_mismatch", "; ".join(parts) + f" (expected {expected})", line=line)


def _record_problem(fields: list[str], header: list[str], week: str, line: int) -> Verdict | None:
    """``wrong_field_count`` or ``too_long`` for the record starting on ``line``, else None."""
    if len(fields) != len(header):
        detail = (
            f"the record has {len(fields)} field{'s' * (len(fields) != 1)}, "
            f"the header has {len(header)}"
        )
        if len(fields) > len(header) and fields[-1] == "":
            detail += " (the last is empty: a trailing comma?)"
        return _bad(week, "wrong_field_count", detail, line=line)
    for name, value in zip(header, fields, strict=True):
        if len(value) > MAX_FIELD_CHARS:
            return _bad(
                week,
                "too_long",
                f"{name} holds {len(value):,} characters (at most {MAX_FIELD_CHARS:,})",
                line=line,
                column=name,
            )
    return None


def _check_records(
    usecase: UseCase, frame: pd.DataFrame, lines: list[int], week: str, monday: date
) -> Verdict:
    """Apply the use case's record schema (pandera, lazy: every failure is collected, the first by
    line is reported), then the feed's own rules: every record inside the file's ISO week, no record
    id twice.

    Args:
        frame: the records as text, index ``0..n-1`` (:meth:`_Table.frame`).
        lines: the physical line of each row of ``frame`` (ascending).
    """
    try:
        rows = usecase.record_schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _first_schema_failure(exc, frame, lines, week, _unique_columns(usecase))
    time, rid = usecase.record_time_column, usecase.record_id_column
    start = pd.Timestamp(monday)
    outside = (rows[time] < start) | (rows[time] >= start + pd.Timedelta(days=7))
    if outside.any():
        i = int(np.flatnonzero(outside.to_numpy())[0])
        return _bad(
            week,
            "date_outside_week",
            f"{time} {rows[time].iloc[i].date()} is outside {week} "
            f"({monday} to {monday + timedelta(days=6)})",
            line=lines[i],
            column=time,
        )
    dup = rows[rid].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        return _bad(
            week,
            "duplicate_rows",
            f"{rid} {rows[rid].iloc[i]} appears more than once "
            f"({int(rows[rid].duplicated(keep=False).sum())} rows involved)",
            line=lines[i],
            column=rid,
        )
    return Verdict(week=week, rows=rows.reset_index(drop=True))


def _unique_columns(usecase: UseCase) -> list[str]:
    """Columns whose values must be unique in a file: the schema's ``unique`` and the record id."""
    unique = usecase.record_schema.unique or []
    return list(dict.fromkeys([*([unique] if isinstance(unique, str) else unique)]))


def _first_schema_failure(
    exc: pa.errors.SchemaErrors, frame: pd.DataFrame, lines: list[int], week: str, unique: list[str]
) -> Verdict:
    """The failure on the earliest line (then the schema's column order) as a :class:`Verdict`.

    ``frame`` has a ``RangeIndex``, so the index pandera reports for a failure is the row's
    position, and ``lines[position]`` its physical line.

    A type that does not coerce is ``bad_type``; an empty field the schema does not allow is
    ``missing_value``; a repeated unique value is ``duplicate_rows`` on the line of its second
    occurrence; a failed check is reported under the check's name when it is one of
    :data:`REASON_CODES` (a use case names its checks so), else ``invalid_value``.
    """
    columns = list(frame.columns)
    found: list[tuple[int, int, str, str]] = []
    for error in exc.schema_errors:
        cases = getattr(error, "failure_cases", None)
        column = str(getattr(error, "column_name", None) or "")
        check = getattr(error, "check", None)
        name = str(getattr(check, "name", None) or check or "")
        if "uniqueness" in name:
            found.extend(_duplicates(frame, unique or [column], columns))
            continue
        if cases is None or not isinstance(cases, pd.DataFrame) or "index" not in cases:
            continue
        error_text = str(getattr(check, "error", None) or "")
        for index, value in zip(cases["index"], cases["failure_case"], strict=True):
            if index is None or pd.isna(index):
                continue
            code, detail = _reason_of(name, error_text, column, frame, int(index), value)
            order = columns.index(column) if column in columns else len(columns)
            found.append((int(index), order, code, detail))
    if not found:
        return _bad(week, "invalid_value", str(exc).splitlines()[0][:500])
    index, order, code, detail = min(found)
    where = columns[order] if order < len(columns) else None
    return _bad(week, code, detail, line=lines[index], column=where)


def _duplicates(
    frame: pd.DataFrame, unique: list[str], columns: list[str]
) -> list[tuple[int, int, str, str]]:
    """The first repeated record (second occurrence) of the ``unique`` columns, as a failure."""
    present = [c for c in unique if c in frame]
    if not present:
        return []
    again = frame.duplicated(subset=present)
    if not again.any():
        return []
    i = int(np.flatnonzero(again.to_numpy())[0])
    key = ", ".join(f"{c} {frame[c].iloc[i]}" for c in present)
    total = int(frame.duplicated(subset=present, keep=False).sum())
    detail = f"{key} appears more than once ({total} rows involved)"
    return [(i, columns.index(present[0]), "duplicate_rows", detail)]


def _reason_of(
    check: str, error: str, column: str, frame: pd.DataFrame, index: int, value: object
) -> tuple[str, str]:
    raw = frame[column].iloc[index] if column in frame else value
    if check == "not_nullable" or raw == "":
        return "missing_value", f"{column} is empty"
    if check.startswith(("coerce_dtype", "dtype")) or not check:
        dtype = check.split("(", 1)[1].rstrip(")").strip("'") if "(" in check else "its type"
        return "bad_type", f"{column} {raw!r} is not {_TYPE_WORDS.get(dtype, dtype)}"
    code = check if check in REASON_CODES else "invalid_value"
    return code, f"{column} is {raw!r}: {error or check}"


#: How a pandas dtype is named in a reason.
_TYPE_WORDS = {
    "int64": "an integer",
    "float64": "a finite number",
    "datetime64[ns]": "a YYYY-MM-DD date",
    "bool": "true or false",
    "str": "text",
}


def batch_id_of(sha256: str) -> str:
    """Batch id of a file: the first 16 hex digits of its SHA-256."""
    return sha256[:16]


def ingest_landing(settings: Settings, *, engine: Engine | None = None) -> IngestReport:
    """Ingest every file in the landing zone (sorted by name); see the module docstring.

    Args:
        settings: locations and the size limit.
        engine: the monitoring store (default: opened from settings, migrated when embedded).

    Returns:
        An :class:`IngestReport`. Files already decided are listed under ``skipped``.
    """
    engine = engine or open_store(settings)
    settings.ensure_dirs()
    report = IngestReport()
    entries = sorted(p for p in settings.landing_dir.iterdir() if not p.name.startswith("."))
    for path in entries:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # removed while we were listing: nothing to decide
            continue
        if stat.S_ISREG(mode):
            outcome = _ingest_one(path, settings, engine)
        else:
            outcome = _quarantine_entry(path, mode, settings, engine)
        {
            "accepted": report.accepted,
            "quarantined": report.quarantined,
            "duplicate": report.duplicates,
            "skipped": report.skipped,
        }[outcome.status].append(outcome)
    return report


def _ingest_one(path: Path, settings: Settings, engine: Engine) -> FileOutcome:
    sha = sha256_file(path)
    batch = batch_id_of(sha)
    with Session(engine) as session:
        known = session.scalars(
            select(IngestionDecision).where(IngestionDecision.content_sha256 == sha)
        ).all()
        same_name = next((d for d in known if d.file_name == path.name), None)
        if same_name is not None:
            if same_name.status == "quarantined":
                _finish_quarantine(path, Path(same_name.quarantine_path or ""))
            return FileOutcome(
                path.name,
                "skipped",
                batch,
                same_name.week,
                reason_code="already_decided",
                reason_detail=f"decided {same_name.status} on "
                f"{same_name.decided_at:%Y-%m-%d %H:%M}",
            )
        accepted_copy = next((d for d in known if d.status == "accepted"), None)
        if accepted_copy is not None:
            decision = IngestionDecision(
                batch_id=batch,
                file_name=path.name,
                content_sha256=sha,
                size_bytes=path.stat().st_size,
                week=accepted_copy.week,
                status="duplicate",
                reason_code="same_content",
                reason_detail=f"same content as {accepted_copy.file_name} "
                f"(batch {accepted_copy.batch_id})",
                decided_at=datetime.now(UTC),
            )
            return _record(session, decision, path)

        verdict = validate_file(path, settings.max_file_bytes, settings.usecase_spec)
        if verdict.ok and verdict.week is not None:
            taken = session.scalars(
                select(IngestionDecision).where(
                    IngestionDecision.week == verdict.week, IngestionDecision.status == "accepted"
                )
            ).first()
            if taken is not None:
                verdict = _bad(
                    verdict.week,
                    "week_already_ingested",
                    f"{verdict.week} was accepted from {taken.file_name} "
                    f"(batch {taken.batch_id}); a correction needs an operator",
                )
        now = datetime.now(UTC)
        if verdict.ok:
            assert verdict.rows is not None and verdict.week is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
            target = (
                settings.warehouse_dir
                / "records"
                / f"week={verdict.week}"
                / f"batch-{batch}.parquet"
            )
            buf = BytesIO()
            verdict.rows.assign(batch_id=batch).to_parquet(buf, index=False)
            write_atomic(target, buf.getvalue())
            decision = IngestionDecision(
                batch_id=batch,
                file_name=path.name,
                content_sha256=sha,
                size_bytes=path.stat().st_size,
                week=verdict.week,
                status="accepted",
                n_rows=len(verdict.rows),
                warehouse_path=str(target),
                decided_at=now,
            )
            return _record(session, decision, path)

        destination = settings.quarantine_dir / f"{batch}_{path.name}"
        reason = {
            "file": path.name,
            "sha256": sha,
            "batch_id": batch,
            "week": verdict.week,
            "reason_code": verdict.reason_code,
            "reason_detail": verdict.reason_detail,
            "line": verdict.line,
            "column": verdict.column,
            "decided_at": now.isoformat(),
        }
        shutil.copy2(path, destination)
        write_atomic(
            destination.with_name(destination.name + ".reason.json"),
            json.dumps(reason, indent=2).encode("utf-8"),
        )
        detail = verdict.reason_detail or ""
        if verdict.line is not None:
            detail = f"line {verdict.line}: {detail}"
        decision = IngestionDecision(
            batch_id=batch,
            file_name=path.name,
            content_sha256=sha,
            size_bytes=path.stat().st_size,
            week=verdict.week,
            status="quarantined",
            reason_code=verdict.reason_code,
            reason_detail=detail,
            quarantine_path=str(destination),
            decided_at=now,
        )
        outcome = _record(session, decision, path)
        _finish_quarantine(path, destination)
        return outcome


def _entry_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "special file"


def _quarantine_entry(path: Path, mode: int, settings: Settings, engine: Engine) -> FileOutcome:
    """Move a landing entry that is not a regular file (symlink, folder, FIFO, device) to
    quarantine as it is: a symlink is moved as a link and never followed, nothing is read from it.
    Its ledger identity is the SHA-256 of its kind, name and link target."""
    kind = _entry_kind(mode)
    target = os.readlink(path) if stat.S_ISLNK(mode) else ""
    sha = hashlib.sha256(f"{kind}\0{path.name}\0{target}".encode()).hexdigest()
    batch = batch_id_of(sha)
    now = datetime.now(UTC)
    destination = settings.quarantine_dir / f"{batch}_{path.name}"
    detail = f"{path.name!r} is a {kind}" + (f" (to {target!r})" if target else "")
    detail += "; only regular files are ingested, and links are never followed"
    with Session(engine) as session:
        known = session.scalars(
            select(IngestionDecision).where(IngestionDecision.content_sha256 == sha)
        ).first()
        if known is not None and os.path.lexists(destination):
            return FileOutcome(
                path.name,
                "skipped",
                batch,
                None,
                reason_code="already_decided",
                reason_detail=f"decided {known.status} on {known.decided_at:%Y-%m-%d %H:%M}",
            )
        reason = {
            "file": path.name,
            "sha256": sha,
            "batch_id": batch,
            "week": None,
            "reason_code": "not_a_regular_file",
            "reason_detail": detail,
            "decided_at": now.isoformat(),
        }
        write_atomic(
            destination.with_name(destination.name + ".reason.json"),
            json.dumps(reason, indent=2).encode("utf-8"),
        )
        decision = IngestionDecision(
            batch_id=batch,
            file_name=path.name,
            content_sha256=sha,
            size_bytes=0,
            week=None,
            status="quarantined",
            reason_code="not_a_regular_file",
            reason_detail=detail,
            quarantine_path=str(destination),
            decided_at=now,
        )
        outcome = (
            _record(session, decision, path)
            if known is None
            else FileOutcome(
                path.name,
                "quarantined",
                batch,
                None,
                reason_code="not_a_regular_file",
                reason_detail=detail,
            )
        )
    if not os.path.lexists(destination):
        shutil.move(path, destination)  # renames the link or folder itself; never follows it
    return outcome


def _record(session: Session, decision: IngestionDecision, path: Path) -> FileOutcome:
    """Insert the ledger row; a concurrent run that decided first wins and this one skips."""
    session.add(decision)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return FileOutcome(
            path.name,
            "skipped",
            decision.batch_id,
            decision.week,
            reason_code="already_decided",
            reason_detail="decided by a concurrent ingestion run",
        )
    return FileOutcome(
        file=path.name,
        status=decision.status,
        batch_id=decision.batch_id,
        week=decision.week,
        n_rows=decision.n_rows,
        reason_code=decision.reason_code,
        reason_detail=decision.reason_detail,
    )


def _finish_quarantine(path: Path, destination: Path) -> None:
    """Remove the landing copy once the quarantine copy is in place (crash-safe order: copy,
    record, then unlink)."""
    if destination.name and destination.exists() and path.exists():
        os.unlink(path)


def format_report(report: IngestReport) -> str:
    """Readable lines for ``rollguard data ingest``."""
    lines = [
        f"accepted: {len(report.accepted)}  quarantined: {len(report.quarantined)}  "
        f"duplicates: {len(report.duplicates)}  skipped (already decided): {len(report.skipped)}"
    ]
    for o in report.accepted:
        lines.append(f"  accepted    {o.file}  week {o.week}  {o.n_rows} rows  batch {o.batch_id}")
    for o in report.quarantined:
        lines.append(f"  quarantined {o.file}  [{o.reason_code}] {o.reason_detail}")
    for o in report.duplicates:
        lines.append(f"  duplicate   {o.file}  {o.reason_detail}")
    return "\n".join(lines)
