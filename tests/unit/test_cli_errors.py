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


# --- refused starts of the servers: the real commands in a subprocess -----------------------------

ROOT = Path(__file__).resolve().parents[2]
ROLLGUARD = ["-c", "from rollguard.cli import main; main()"]
UVICORN_FACTORY = ["-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1"]


def _refused(argv: list[str], home: Path, **env: str) -> str:
    """Run ``python argv`` and return its one stderr line, after checking exit code 2."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")}
    environ.update({"ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test", **env})
    environ.pop("WEB_CONCURRENCY", None)
    proc = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=environ, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        ([*ROLLGUARD, "serve", "api"], {"ROLLGUARD_USECASE": "nope"}, "ROLLGUARD_USECASE"),
        ([*ROLLGUARD, "serve", "api"], {"ROLLGUARD_API_MAX_ROWS": "-1"}, "ROLLGUARD_API_MAX_ROWS"),
        ([*ROLLGUARD, "serve", "guard"], {"ROLLGUARD_USECASE": "nope"}, "ROLLGUARD_USECASE"),
        (
            [*ROLLGUARD, "serve", "guard"],
            {
                "ROLLGUARD_MLFLOW_USERNAME": "guard",
                "ROLLGUARD_MLFLOW_PASSWORD_FILE": "/nonexistent",
            },
            "/nonexistent",
        ),
        ([*ROLLGUARD, "serve", "ui"], {"ROLLGUARD_API_PORT": "x"}, "ROLLGUARD_API_PORT"),
        (["-m", "api"], {"ROLLGUARD_USECASE": "nope"}, "ROLLGUARD_USECASE"),
        (UVICORN_FACTORY, {"ROLLGUARD_USECASE": "nope"}, "ROLLGUARD_USECASE"),
        (UVICORN_FACTORY, {"ROLLGUARD_API_MAX_ROWS": "0"}, "ROLLGUARD_API_MAX_ROWS"),
    ],
    ids=[
        "api-usecase",
        "api-setting",
        "guard-usecase",
        "guard-mlflow-password",
        "ui-setting",
        "python-m-api",
        "uvicorn-factory-usecase",
        "uvicorn-factory-setting",
    ],  # fmt: skip
)
def test_a_refused_server_start_is_one_line_and_exit_2(
    home: Path, argv: list[str], env: dict[str, str], names: str
) -> None:
    assert names in _refused([*argv, "--port", str(_closed_port())], home, **env)


@pytest.mark.parametrize("service", ["api", "guard"])
def test_a_port_in_use_is_one_line_and_exit_2(home: Path, service: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _refused(
            [*ROLLGUARD, "serve", service, "--host", "127.0.0.1", "--port", str(port)], home
        )
    assert f"127.0.0.1:{port}" in line and "in use" in line
    assert f"ROLLGUARD_{service.upper()}_PORT" in line
