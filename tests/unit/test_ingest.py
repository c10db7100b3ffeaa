"""Replay and ingestion: every bad file is quarantined with its own reason, good files go on, and
running anything twice changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.warehouse import ingested_weeks, load_records
from pipeline import feed
from pipeline.ingest import ingest_landing
from rollguard.db.models import IngestionDecision
from rollguard.settings import Settings
from rollguard.store import open_store

GOOD = (
    "transaction_id,customer_id,date,number_of_cds,dollar_value\n"
    "1,1,1997-03-04,1,11.77\n"
    "2,2,1997-03-05,5,77.00\n"
)
HEADER = GOOD.splitlines()[0] + "\n"

BAD_FILES: dict[str, tuple[str, bytes]] = {
    "bad_filename": ("cdnow_march.csv", (HEADER + "1,1,1997-03-04,1,9.99\n").encode()),
    "empty_file": ("cdnow_1997-W11.csv", b""),
    "header_only": ("cdnow_1997-W12.csv", HEADER.encode()),
    "bad_encoding": (
        "cdnow_1997-W13.csv",
        (HEADER + "1,1,1997-03-25,1,11\xe9\n").encode("latin-1"),
    ),
    "schema_mismatch": ("cdnow_1997-W14.csv", b"customer_id,date,amount\n1,1997-04-01,3.0\n"),
    "bad_type": ("cdnow_1997-W15.csv", (HEADER + "1,1,1997-04-08,two,11.77\n").encode()),
    "negative_value": ("cdnow_1997-W16.csv", (HEADER + "1,1,1997-04-15,1,-11.77\n").encode()),
    "date_outside_week": ("cdnow_1997-W17.csv", (HEADER + "1,1,1997-05-22,1,11.77\n").encode()),
    "duplicate_rows": (
        "cdnow_1997-W18.csv",
        (HEADER + "7,1,1997-04-29,1,11.77\n7,1,1997-04-29,1,11.77\n").encode(),
    ),
    "too_large": ("cdnow_1997-W19.csv", (HEADER + "1,1,1997-05-06,1,11.77\n" * 200).encode()),
    "week_in_future": ("cdnow_2999-W02.csv", (HEADER + "1,1,2999-01-08,1,11.77\n").encode()),
    "compressed": ("cdnow_1997-W20.csv", gzip.compress(GOOD.encode(), mtime=0)),
    "wrong_field_count": ("cdnow_1997-W21.csv", (HEADER + "1,1,1997-05-20,1,11.77,\n").encode()),
}


def _ledger(settings: Settings) -> list[tuple]:
    with Session(open_store(settings)) as session:
        rows = session.scalars(select(IngestionDecision).order_by(IngestionDecision.id)).all()
        return [(r.file_name, r.content_sha256, r.status, r.reason_code, r.week) for r in rows]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_each_bad_file_is_quarantined_with_its_reason_and_good_files_go_on(home: Path) -> None:
    settings = Settings(home=home, max_file_bytes=2_000)
    settings.landing_dir.mkdir(parents=True)
    (settings.landing_dir / "cdnow_1997-W10.csv").write_text(GOOD)
    for name, content in BAD_FILES.values():
        (settings.landing_dir / name).write_bytes(content)

    report = ingest_landing(settings)

    assert [o.file for o in report.accepted] == ["cdnow_1997-W10.csv"]
    got = {o.file: o.reason_code for o in report.quarantined}
    assert got == {name: code for code, (name, _) in BAD_FILES.items()}
    for outcome in report.quarantined:
        copies = list(settings.quarantine_dir.glob(f"*_{outcome.file}"))
        assert len(copies) == 1, "the bad file is kept in quarantine, never deleted"
        assert copies[0].read_bytes() == dict(BAD_FILES.values())[outcome.file]
        reason = json.loads(Path(str(copies[0]) + ".reason.json").read_text())
        assert reason["reason_code"] == outcome.reason_code
        assert reason["reason_detail"]
        assert not (settings.landing_dir / outcome.file).exists()
    assert {r[2] for r in _ledger(settings)} == {"accepted", "quarantined"}
    assert len(_ledger(settings)) == 1 + len(BAD_FILES)


def test_reasons_name_the_line_and_column(home: Path) -> None:
    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    name, content = BAD_FILES["bad_type"]
    (settings.landing_dir / name).write_bytes(content)
    (outcome,) = ingest_landing(settings).quarantined
    assert outcome.reason_detail == "line 2: number_of_cds 'two' is not an integer"


def test_renamed_copy_is_not_new_data(home: Path) -> None:
    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    (settings.landing_dir / "cdnow_1997-W10.csv").write_text(GOOD)
    ingest_landing(settings)
    (settings.landing_dir / "copy_of_1997-W10.csv").write_text(GOOD)
    report = ingest_landing(settings)
    assert [o.file for o in report.duplicates] == ["copy_of_1997-W10.csv"]
    assert not report.accepted
    assert len(load_records(settings)) == 2
    again = ingest_landing(settings)
    assert not again.duplicates and len(again.skipped) == 2


def test_a_second_different_file_for_an_accepted_week_is_quarantined(home: Path) -> None:
    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    (settings.landing_dir / "cdnow_1997-W10.csv").write_text(GOOD)
    ingest_landing(settings)
    (settings.landing_dir / "fix_1997-W10.csv").write_text(GOOD + "3,3,1997-03-06,1,1.00\n")
    (outcome,) = ingest_landing(settings).quarantined
    assert outcome.reason_code == "week_already_ingested"
    assert len(load_records(settings)) == 2


def test_replay_and_ingest_twice_equal_once(home: Path) -> None:
    settings = Settings(home=home)
    first = feed.replay(settings, weeks=10)
    assert len(first.written) == 10
    report = ingest_landing(settings)
    assert len(report.accepted) == 10
    ledger, warehouse = _ledger(settings), _tree_digest(settings.warehouse_dir)

    again = feed.replay(settings, until=pd.Timestamp("1997-03-03").date())
    assert again.written == [] and len(again.unchanged) == 10
    second = ingest_landing(settings)
    assert not second.accepted and not second.quarantined and len(second.skipped) == 10
    assert _ledger(settings) == ledger
    assert _tree_digest(settings.warehouse_dir) == warehouse
    assert ingested_weeks(settings) == [f"1997-W{i:02d}" for i in range(1, 11)]


def test_replay_weeks_continues_after_the_newest_delivered_week(home: Path) -> None:
    settings = Settings(home=home)
    feed.replay(settings, weeks=2)
    nxt = feed.replay(settings, weeks=3)
    assert nxt.written == ["cdnow_1997-W03.csv", "cdnow_1997-W04.csv", "cdnow_1997-W05.csv"]


def test_replay_never_overwrites_a_different_file(home: Path) -> None:
    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    mine = settings.landing_dir / "cdnow_1997-W01.csv"
    mine.write_text(GOOD)
    result = feed.replay(settings, until=pd.Timestamp("1997-01-08").date())
    assert result.conflicts == ["cdnow_1997-W01.csv"]
    assert mine.read_text() == GOOD


def test_warehouse_matches_the_source_log(home: Path) -> None:
    from usecases.cdnow.source import load_dataset

    settings = Settings(home=home)
    feed.replay(settings, until=pd.Timestamp("1997-02-09").date())
    ingest_landing(settings)
    stored = load_records(settings).drop(columns="batch_id")
    source, _, _ = load_dataset()
    expected = source[source["date"] < "1997-02-10"].sort_values(["date", "transaction_id"])
    pd.testing.assert_frame_equal(stored, expected.reset_index(drop=True))


@pytest.mark.parametrize("code", sorted(BAD_FILES))
def test_bad_file_does_not_block_the_good_files_after_it(home: Path, code: str) -> None:
    settings = Settings(home=home, max_file_bytes=2_000)
    settings.landing_dir.mkdir(parents=True)
    name, content = BAD_FILES[code]
    (settings.landing_dir / ("a_" + name)).write_bytes(content)
    (settings.landing_dir / "z_cdnow_1997-W10.csv").write_text(GOOD)
    report = ingest_landing(settings)
    assert [o.reason_code for o in report.quarantined] == [code]
    assert [o.file for o in report.accepted] == ["z_cdnow_1997-W10.csv"]


def test_replay_delivers_only_complete_weeks(home: Path) -> None:
    settings = Settings(home=home)
    result = feed.replay(settings, until=pd.Timestamp("1998-07-31").date())
    # 1997-W01 .. 1998-W26; 1998-W27 holds only 1998-06-29 and -30 and is never delivered
    assert result.weeks_available == 78
    assert result.written[-1] == "cdnow_1998-W26.csv"
    assert not (settings.landing_dir / "cdnow_1998-W27.csv").exists()


def test_links_folders_and_fifos_are_moved_aside_never_followed(home: Path, tmp_path: Path) -> None:
    import os

    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    secret = tmp_path / "outside" / "secret_1997-W11.csv"
    secret.parent.mkdir()
    secret.write_text(GOOD.replace("1997-03-0", "1997-03-1"))
    (settings.landing_dir / "cdnow_1997-W10.csv").write_text(GOOD)
    (settings.landing_dir / "link_1997-W11.csv").symlink_to(secret)
    (settings.landing_dir / "dangling_1997-W12.csv").symlink_to(tmp_path / "nowhere")
    (settings.landing_dir / "folder_1997-W13.csv").mkdir()
    os.mkfifo(settings.landing_dir / "fifo_1997-W14.csv")

    report = ingest_landing(settings)

    assert [o.file for o in report.accepted] == ["cdnow_1997-W10.csv"]
    got = {o.file: o.reason_code for o in report.quarantined}
    assert got == {
        "dangling_1997-W12.csv": "not_a_regular_file",
        "fifo_1997-W14.csv": "not_a_regular_file",
        "folder_1997-W13.csv": "not_a_regular_file",
        "link_1997-W11.csv": "not_a_regular_file",
    }
    assert sorted(p.name for p in settings.landing_dir.iterdir()) == ["cdnow_1997-W10.csv"]
    moved_link = next(settings.quarantine_dir.glob("*_link_1997-W11.csv"))
    assert moved_link.is_symlink(), "the link itself is quarantined, not a copy of its target"
    assert secret.read_text().startswith("transaction_id"), "the target is untouched"
    reason = json.loads(Path(str(moved_link) + ".reason.json").read_text())
    assert "symbolic link" in reason["reason_detail"] and str(secret) in reason["reason_detail"]
    assert len(load_records(settings)) == 2, "nothing was read through the link"
    again = ingest_landing(settings)
    assert not again.quarantined and not again.accepted


@pytest.fixture(scope="module")
def hotel_week() -> tuple[str, list[str]]:
    """The hotel feed's own file for 2016-W33: (file name, CSV lines)."""
    from usecases.hotel import USECASE as HOTEL

    records = HOTEL.load_history().records
    iso = records[HOTEL.record_time_column].dt.isocalendar()
    week = records[(iso["year"] == 2016) & (iso["week"] == 33)]
    text = feed.render_week(HOTEL, week).decode()
    return feed.week_file_name(HOTEL, "2016-W33"), text.splitlines()


def _hotel_field(lines: list[str], line: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    return [*lines[: line - 1], ",".join(fields), *lines[line:]]


@pytest.mark.parametrize(
    ("corrupt", "code", "line", "column"),
    [
        (
            lambda ls: _hotel_field(ls, 4, "booking_id", ls[2].split(",")[0]),
            "duplicate_rows",
            4,
            "booking_id",
        ),
        (lambda ls: _hotel_field(ls, 3, "agent", "a" * 20_000), "too_long", 3, "agent"),
        (lambda ls: _hotel_field(ls, 5, "lead_time", ""), "missing_value", 5, "lead_time"),
    ],
)
def test_hotel_files_are_quarantined_at_the_exact_line(
    home: Path, hotel_week: tuple[str, list[str]], corrupt, code: str, line: int, column: str
) -> None:
    settings = Settings(home=home, usecase="hotel", _env_file=None)  # type: ignore[call-arg]
    settings.landing_dir.mkdir(parents=True)
    name, lines = hotel_week
    (settings.landing_dir / name).write_text("\n".join(corrupt(lines)) + "\n")
    (outcome,) = ingest_landing(settings).quarantined
    reason = json.loads(next(settings.quarantine_dir.glob("*.reason.json")).read_text())
    assert (outcome.reason_code, reason["line"], reason["column"]) == (code, line, column), reason


# Issue 17: quarantine reasons point at the physical line of the file (header = line 1; blank
# lines and records that span lines counted) and name compressed files as such.


def _quarantine_one(home: Path, name: str, content: bytes) -> tuple[str | None, dict]:
    """Ingest one file; its ledger reason code and its ``.reason.json``."""
    settings = Settings(home=home)
    settings.landing_dir.mkdir(parents=True)
    (settings.landing_dir / name).write_bytes(content)
    (outcome,) = ingest_landing(settings).quarantined
    reason = json.loads(next(settings.quarantine_dir.glob("*.reason.json")).read_text())
    assert reason["reason_code"] == outcome.reason_code
    return outcome.reason_detail, reason


def test_a_trailing_comma_on_every_row_is_reported_at_line_2(home: Path) -> None:
    # the user's file: ids are not positions (pandas made the first column the index and
    # reported a transaction id, "line 182", as the line)
    rows = "".join(f"{181 + i},{i + 1},1997-03-04,1,11.77,\n" for i in range(300))
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", (HEADER + rows).encode())
    assert (reason["reason_code"], reason["line"], reason["column"]) == (
        "wrong_field_count",
        2,
        None,
    )
    assert detail == (
        "line 2: the record has 6 fields, the header has 5 (the last is empty: a trailing comma?)"
    )


def test_blank_lines_before_a_bad_row_do_not_shift_its_line(home: Path) -> None:
    content = HEADER + "\n\n1,1,1997-03-04,1,11.77\n\n   \n2,2,1997-03-05,two,11.77\n"
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content.encode())
    assert (reason["reason_code"], reason["line"], reason["column"]) == (
        "bad_type",
        7,
        "number_of_cds",
    )
    assert detail == "line 7: number_of_cds 'two' is not an integer"


def test_a_line_with_an_extra_field_names_the_line_and_the_counts(home: Path) -> None:
    content = HEADER + "1,1,1997-03-04,1,11.77\n\n2,2,1997-03-05,1,11.77,oops\n"
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content.encode())
    assert (reason["reason_code"], reason["line"]) == ("wrong_field_count", 4)
    assert detail == "line 4: the record has 6 fields, the header has 5"


def test_a_gzip_file_named_csv_is_quarantined_as_compressed(home: Path) -> None:
    content = gzip.compress(GOOD.encode(), mtime=0)
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content)
    assert (reason["reason_code"], reason["line"]) == ("compressed", None)
    assert detail == "the file is gzip-compressed; land it uncompressed as CSV"


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("bzip2", lambda: __import__("bz2").compress(GOOD.encode())),
        ("xz", lambda: __import__("lzma").compress(GOOD.encode())),
        ("zstd", lambda: b"\x28\xb5\x2f\xfd" + bytes(range(40))),
        ("zip", lambda: _zipped(GOOD)),
    ],
)
def test_other_compressed_files_are_named_by_their_format(home: Path, fmt: str, content) -> None:
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content())
    assert reason["reason_code"] == "compressed"
    assert detail == f"the file is {fmt}-compressed; land it uncompressed as CSV"


def _zipped(text: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("cdnow_1997-W10.csv", text)
    return buf.getvalue()


def test_a_record_spanning_lines_is_reported_at_the_line_it_starts_on(home: Path) -> None:
    # line 2 is a valid record whose quoted field holds a line break (lines 2-3); line 4 is bad
    content = HEADER + '1,1,1997-03-04,"\n1",11.77\n2,2,1997-03-05,-1,11.77\n'
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content.encode())
    assert (reason["reason_code"], reason["line"], reason["column"]) == (
        "negative_value",
        4,
        "number_of_cds",
    )


def test_an_unclosed_quote_is_reported_where_it_opens(home: Path) -> None:
    content = HEADER + '1,1,1997-03-04,1,11.77\n2,"2,1997-03-05,1,11.77\n3,3,1997-03-05,1,1\n'
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content.encode())
    assert (reason["reason_code"], reason["line"]) == ("schema_mismatch", 3)
    assert detail == "line 3: not a CSV table: a quote opened in this record is never closed"


def test_a_bad_byte_after_blank_and_crlf_lines_is_reported_at_its_line(home: Path) -> None:
    content = (HEADER + "\n1,1,1997-03-04,1,11.77\n").replace("\n", "\r\n").encode()
    content += "\r2,2,1997-03-05,1,11\xe9\r\n".encode("latin-1")
    detail, reason = _quarantine_one(home, "cdnow_1997-W10.csv", content)
    assert (reason["reason_code"], reason["line"]) == ("bad_encoding", 5)
