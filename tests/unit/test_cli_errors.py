"""Expected failures reach people as one line (or one JSON object with a stable ``kind``) and exit
code 2, never as a traceback: bad or unreachable store, unreachable registry, unusable home folder,
usage errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollguard.cli import app, main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json_error(args: list[str]) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout)


def test_invalid_database_url_is_a_configuration_error(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    monkeypatch.setenv("ROLLGUARD_DATABASE_URL", "nosuchdb://x/y")
    error = _json_error(["data", "ingest"])
    assert error["kind"] == "configuration"
    assert "ROLLGUARD_DATABASE_URL" in error["error"]


def test_unreachable_store_names_the_problem_and_hides_the_password(
    home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    monkeypatch.setenv(
        "ROLLGUARD_DATABASE_URL",
        f"postgresql+psycopg://rollguard:s3cret@127.0.0.1:{_closed_port()}/store",
    )
    error = _json_error(["data", "ingest"])
    assert error["kind"] == "store_unavailable"
    assert "s3cret" not in error["error"]
    assert "ROLLGUARD_DATABASE_URL" in error["error"]


def test_home_that_is_a_file_is_a_filesystem_error(tmp_path: Path, monkeypatch) -> None:
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("")
    monkeypatch.setenv("ROLLGUARD_HOME", str(not_a_folder))
    error = _json_error(["data", "replay", "--weeks", "1"])
    assert error["kind"] == "filesystem"
    assert str(not_a_folder) in error["error"]


def test_unreachable_registry_fails_fast_with_one_line(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    error = _json_error(["models"])
    assert error["kind"] == "registry_unavailable"
    assert error["error"].startswith("MLflow: ")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["promote", "abc", "--reason", "x"], "not a model version"),
        (["promote", "3", "--reason", "  "], "must say why"),
        (["rollback", "--reason", "x", "--to", "0"], "not a model version"),
        (["rollback", "--reason", "x", "--to", "9" * 23], "not a model version"),
        (["demo", "--weeks", "2", "--all"], "not both"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_json_line_with_json(
    args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--json"])
    assert stop.value.code == 2
    out = capsys.readouterr().out
    error = json.loads(out)
    assert error["kind"] == "usage" and problem in error["error"]


def test_usage_errors_without_json_are_a_usage_line_and_one_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["promote", "abc", "--reason", "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Usage: rollguard promote")
    assert (
        err[-1]
        == "error: Invalid value for 'version': 'abc' is not a model version (a positive integer)"
    )
