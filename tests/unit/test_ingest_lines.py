"""Property tests: a quarantine reason points at the PHYSICAL line of the file (1-based, the header
line counted, blank lines and records that span lines included).

Files are random valid weekly files of the default use case (CDNOW) built from its record schema's
valid values, optionally with blank (or whitespace-only) lines anywhere, CRLF line ends, quoted
fields and a valid record whose quoted field spans two lines; then one line is corrupted in one of
several ways and the reported (reason code, line, column) must be that line's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import MAX_FIELD_CHARS, validate_file
from rollguard.usecase import UseCase, load_usecase

PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WEEK = "1997-W10"
MONDAY = date(1997, 3, 3)
NAME = f"cdnow_{WEEK}.csv"


@pytest.fixture(scope="module")
def cdnow() -> UseCase:
    """The default use case (CDNOW), whose record schema the files follow."""
    return load_usecase("cdnow")


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One folder for every example (hypothesis reruns a test many times; a function-scoped
    ``tmp_path`` would be shared across them anyway)."""
    with tempfile.TemporaryDirectory(prefix="rollguard-ingest-lines-") as name:
        yield Path(name)


def _record(tid: int, cid: int, day: int, cds: int, cents: int) -> list[str]:
    """One valid CDNOW record as its text fields, in the schema's column order."""
    return [
        str(tid),
        str(cid),
        (MONDAY + timedelta(days=day)).isoformat(),
        str(cds),
        f"{cents / 100:.2f}",
    ]


@st.composite
def records(draw: st.DrawFn) -> list[list[str]]:
    """1-40 valid records of one ISO week, with distinct transaction ids."""
    n = draw(st.integers(1, 40))
    tids = draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n, unique=True))
    return [
        _record(
            tid,
            draw(st.integers(1, 30_000)),
            draw(st.integers(0, 6)),
            draw(st.integers(0, 40)),
            draw(st.integers(0, 500_000)),
        )
        for tid in tids
    ]


@dataclass(frozen=True)
class Layout:
    """How the records are written: blank lines before each record (index 0: before the header),
    the line end, which records are quoted field by field, and which (if any) valid record has a
    quoted field that spans two physical lines."""

    blanks: list[str]
    newline: str
    quoted: list[bool]
    spanning: int | None


@st.composite
def layouts(draw: st.DrawFn, n: int) -> Layout:
    """A :class:`Layout` for ``n`` records: each gap gets 0-2 blank lines (empty, spaces or a tab)
    a quarter of the time, a quarter of the records are quoted, half of the files have a record
    spanning two lines."""
    blank = st.sampled_from(["", " ", "\t", "  "])
    blanks = [
        "".join(b + "\n" for b in draw(st.lists(blank, max_size=2)))
        if draw(st.booleans()) and draw(st.booleans())
        else ""
        for _ in range(n + 1)
    ]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    quoted = [draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]
    spanning = draw(st.integers(0, n - 1)) if draw(st.booleans()) else None
    return Layout(blanks, newline, quoted, spanning)


def _write(
    columns: list[str], rows: list[list[str]], layout: Layout, raw: dict[int, bytes] | None = None
) -> tuple[bytes, list[int]]:
    """The file's bytes and the physical line each record starts on. ``raw`` replaces a record's
    text (encoding corruptions); a spanning record's ``number_of_cds`` field is written as
    ``"\\n<value>"`` (one more physical line; the value strips to the same number)."""
    nl = layout.newline
    out = [layout.blanks[0].replace("\n", nl).encode(), (",".join(columns) + nl).encode()]
    line = 1 + layout.blanks[0].count("\n") + 1
    starts = []
    for i, fields in enumerate(rows):
        blank = layout.blanks[i + 1]
        out.append(blank.replace("\n", nl).encode())
        line += blank.count("\n")
        starts.append(line)
        fields = list(fields)
        if layout.quoted[i]:
            fields = ['"' + f.replace('"', '""') + '"' for f in fields]
        if raw and i in raw:
            out.append(raw[i])
            line += 1
            continue
        if layout.spanning == i and len(fields) == len(columns):
            fields[3] = f'"{nl}{fields[3].strip(chr(34))}"'
            line += 1
        out.append((",".join(fields) + nl).encode())
        line += 1
    return b"".join(out), starts


def _validate(folder: Path, cdnow: UseCase, content: bytes) -> tuple:
    path = folder / NAME
    path.write_bytes(content)
    verdict = validate_file(path, 10**8, cdnow)
    return verdict.reason_code, verdict.line, verdict.column, verdict.reason_detail


@PROPS
@given(data=st.data())
def test_valid_files_are_accepted(folder: Path, cdnow: UseCase, data: st.DataObject) -> None:
    rows = data.draw(records())
    layout = data.draw(layouts(len(rows)))
    content, _ = _write(list(cdnow.record_columns), rows, layout)
    path = folder / NAME
    path.write_bytes(content)
    verdict = validate_file(path, 10**8, cdnow)
    assert verdict.ok, (verdict, content)
    assert verdict.rows is not None and len(verdict.rows) == len(rows)


#: One corruption of one record: (column index or None, new value or None) and the expected
#: (reason code, column). ``None`` value: the corruption is structural (see ``_corrupt``).
CORRUPTIONS = {
    "bad_type_cds": (3, "two", "bad_type", "number_of_cds"),
    "bad_type_id": (0, "n/a", "bad_type", "transaction_id"),
    "bad_type_date": (2, "1997-02-30", "bad_type", "date"),
    "bad_type_inf": (4, "inf", "bad_type", "dollar_value"),
    "missing_value": (1, "", "missing_value", "customer_id"),
    "missing_date": (2, "  ", "missing_value", "date"),
    "negative_value": (4, "-1.00", "negative_value", "dollar_value"),
    "date_outside_week": (2, "1997-03-10", "date_outside_week", "date"),
    "too_long": (1, "7" * (MAX_FIELD_CHARS + 1), "too_long", "customer_id"),
    "extra_field": (None, None, "wrong_field_count", None),
    "missing_field": (None, None, "wrong_field_count", None),
    "duplicate_id": (None, None, "duplicate_rows", "transaction_id"),
    "bad_encoding": (None, None, "bad_encoding", None),
    "unclosed_quote": (None, None, "schema_mismatch", None),
}


def _corrupt(
    kind: str, rows: list[list[str]], at: int, layout: Layout
) -> tuple[list[list[str]], dict[int, bytes] | None, Layout]:
    """``rows`` with record ``at`` corrupted in the way ``kind`` names."""
    rows = [list(r) for r in rows]
    index, value, _, _ = CORRUPTIONS[kind]
    if index is not None:
        assert value is not None
        rows[at][index] = value
        return rows, None, layout
    if kind == "extra_field":
        rows[at].append("x")
    elif kind == "missing_field":
        rows[at].pop()
    elif kind == "duplicate_id":
        rows[at][0] = rows[at - 1][0]
    elif kind == "bad_encoding":
        text = ",".join(rows[at][:4]) + ",11\xe9" + layout.newline
        return rows, {at: text.encode("latin-1")}, layout
    elif kind == "unclosed_quote":
        rows[at][1] = '"' + rows[at][1]
        # quoting every record would escape the stray quote; nothing may close it, so no later
        # record spans lines either
        layout = Layout(
            layout.blanks,
            layout.newline,
            [False] * len(rows),
            layout.spanning if layout.spanning is not None and layout.spanning < at else None,
        )
    return rows, None, layout


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@PROPS
@given(data=st.data())
def test_the_reported_line_is_the_physical_line_of_the_bad_record(
    folder: Path, cdnow: UseCase, data: st.DataObject, kind: str
) -> None:
    rows = data.draw(records().filter(lambda r: kind != "duplicate_id" or len(r) > 1))
    layout = data.draw(layouts(len(rows)))
    at = data.draw(st.integers(1 if kind == "duplicate_id" else 0, len(rows) - 1), label="at")
    bad_rows, raw, layout = _corrupt(kind, rows, at, layout)
    content, starts = _write(list(cdnow.record_columns), bad_rows, layout, raw)
    code, line, column, detail = _validate(folder, cdnow, content)
    _, _, expected_code, expected_column = CORRUPTIONS[kind]
    assert (code, line, column) == (expected_code, starts[at], expected_column), (detail, content)


@PROPS
@given(data=st.data())
def test_a_trailing_comma_on_every_row_points_at_the_first_record(
    folder: Path, cdnow: UseCase, data: st.DataObject
) -> None:
    rows = [[*r, ""] for r in data.draw(records())]
    layout = data.draw(layouts(len(rows)))
    content, starts = _write(list(cdnow.record_columns), rows, layout)
    code, line, column, detail = _validate(folder, cdnow, content)
    assert (code, line, column) == ("wrong_field_count", starts[0], None), (detail, content)
    assert detail.startswith("the record has 6 fields, the header has 5"), detail
