"""The CDNOW data source: located through Lifetimes' file list, verified, parsed; clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollguard.cli import app
from rollguard.errors import DatasetError
from usecases.cdnow import source as cdnow


def test_packaged_file_is_found_and_verified() -> None:
    path, digest = cdnow.resolve_dataset()
    assert path.name == "CDNOW_master.txt"
    assert digest == cdnow.MASTER_SHA256


def test_data_info_json_gives_the_published_figures(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    from rollguard.settings import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["data", "info", "--json"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_transactions"] == 69659
    assert info["n_customers"] == 23570
    assert info["first_date"] == "1997-01-01"
    assert info["last_date"] == "1998-06-30"
    assert info["sha256"] == cdnow.MASTER_SHA256


def test_missing_user_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetError, match="nope.txt: file not found"):
        cdnow.load_dataset(missing)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    source, _ = cdnow.resolve_dataset()
    altered = tmp_path / "CDNOW_master.txt"
    shutil.copy(source, altered)
    with altered.open("ab") as fh:
        fh.write(b" 99999 19980630  1   1.00\r\n")
    with pytest.raises(DatasetError, match="SHA-256 mismatch: expected eff6889e"):
        cdnow.load_dataset(altered, expected_sha256=cdnow.MASTER_SHA256)


def test_altered_packaged_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    altered = tmp_path / "CDNOW_master.txt"
    altered.write_text(
        " customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n"
    )
    monkeypatch.setattr(cdnow, "locate_master_file", lambda: altered)
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        cdnow.resolve_dataset()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (" 00007 1997013X  1   11.77", "date '1997013X' is not a YYYYMMDD date"),
        (" 00007 19970131  one 11.77", "number_of_cds 'one' is not an integer"),
        (" 00007 19970131  1", "expected 4 fields, found 3"),
        (" 0000A 19970131  1   11.77", "customer_id '0000A' is not an integer"),
        (" 00007 19970131  1   -3.00", "negative or NaN amount"),
    ],
)
def test_unparseable_line_names_file_line_and_problem(
    tmp_path: Path, line: str, problem: str
) -> None:
    log = tmp_path / "mine.txt"
    log.write_text(
        " customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n" + line + "\n"
    )
    with pytest.raises(DatasetError) as err:
        cdnow.load_dataset(log)
    assert err.value.line == 3
    assert problem in str(err.value)
    assert str(err.value).startswith(f"{log}:3: ")


def test_cli_prints_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "info", "--path", str(tmp_path / "x.txt"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].endswith("x.txt: file not found")
    assert "Traceback" not in result.output


def test_user_file_parses_to_typed_columns(tmp_path: Path) -> None:
    log = tmp_path / "mine.txt"
    log.write_text(
        "customer_id date number_of_cds dollar_value\r\n"
        "00001 19970101 1 11.77\r\n00002 19970112 5 77.00\r\n"
    )
    frame, _, digest = cdnow.load_dataset(log)
    assert list(frame.dtypes.astype(str)) == list(cdnow.TRANSACTION_DTYPES.values())
    assert frame["transaction_id"].tolist() == [1, 2]
    assert frame["dollar_value"].tolist() == [11.77, 77.0]
    assert len(digest) == 64


def test_dataset_sha256_is_checked_for_a_path_given_on_the_command_line(
    tmp_path: Path, monkeypatch
) -> None:
    own = tmp_path / "own.txt"
    own.write_text("customer_id date number_of_cds dollar_value\n00001 19970101 1 11.77\n")
    monkeypatch.setenv("ROLLGUARD_DATASET_SHA256", "0" * 64)
    result = CliRunner().invoke(app, ["data", "info", "--path", str(own), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["kind"] == "dataset" and "SHA-256 mismatch" in error["error"]


def test_dataset_sha256_that_contradicts_the_packaged_file_is_refused(
    home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("ROLLGUARD_DATASET_SHA256", "1" * 64)
    result = CliRunner().invoke(app, ["data", "info", "--json"])
    assert result.exit_code == 2
    assert "packaged CDNOW" in json.loads(result.stdout)["error"]
