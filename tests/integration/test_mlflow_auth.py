"""Registry access control against a real authenticated MLflow server on loopback
(``mlflow server --app-name rollguard-auth``, docs/security.md "Registry access control"):
anonymous and read-only clients cannot set an alias, the pipeline sets ``challenger`` but not
``champion``, the gate and the guard move ``champion`` through Rollguard's compare-and-set
function, and an MLflow admin still can (the out-of-band case the API detects)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from registry_guard.registry import CHAMPION, alias_version, move_champion
from rollguard import db
from rollguard.mlflow_auth import USERS
from rollguard.mlflow_client import MlflowCredentialsError, mlflow_client
from rollguard.settings import Settings
from tests.support.servers import start_mlflow_auth_server

VERSION_DELETE = "/api/2.0/mlflow/model-versions/delete"
ALIAS = "/api/2.0/mlflow/registered-models/alias"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Password files as compose mounts them (``/run/secrets/mlflow_<user>_password``)."""
    folder = tmp_path_factory.mktemp("secrets")
    for user in ("admin", *USERS):
        (folder / f"mlflow_{user}_password").write_text(f"{user}-{uuid.uuid4().hex}\n")
    return folder


def password(secrets: Path, user: str) -> str:
    return (secrets / f"mlflow_{user}_password").read_text().strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, secrets: Path) -> Iterator[str]:
    """The authenticated server, its users created by ``rollguard stack mlflow-users``."""
    from rollguard.cli import app

    root = tmp_path_factory.mktemp("mlflow-auth")
    proc = start_mlflow_auth_server(
        root, log_dir=root / "logs", admin_password=password(secrets, "admin")
    )
    try:
        runner = CliRunner()
        args = ["stack", "mlflow-users", "--secrets-dir", str(secrets)]
        result = runner.invoke(app, [*args, "--tracking-uri", proc.url, "--json"])
        assert result.exit_code == 0, result.output + proc.log_tail()
        users = json.loads(result.output)["users"]
        assert [(u["user"], u["created"]) for u in users] == [(u, True) for u in USERS]
        # Idempotent: a second run updates and changes nothing else.
        again = runner.invoke(app, [*args, "--tracking-uri", proc.url, "--json"])
        assert again.exit_code == 0, again.output
        assert not any(u["created"] for u in json.loads(again.output)["users"])
        yield proc.url
    finally:
        proc.stop()


def settings_as(user: str, server: str, secrets: Path, home: Path) -> Settings:
    return Settings(
        home=home,
        mlflow_tracking_uri=server,
        mlflow_username=user,
        mlflow_password_file=secrets / f"mlflow_{user}_password",
    )


@pytest.fixture
def as_user(server: str, secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``as_user(name)``: an MlflowClient authenticated as ``name`` the way every Rollguard
    process is (``rollguard.mlflow_client.mlflow_client``; process-wide credentials, restored
    after the test)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)  # restored (or removed again) after the test

    def make(user: str) -> Any:
        return mlflow_client(settings_as(user, server, secrets, tmp_path / "home"))

    return make


@pytest.fixture(scope="module")
def model(server: str, secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered model with two versions, created by the pipeline identity (as training does)."""
    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        client = mlflow_client(settings_as("pipeline", server, secrets, home))
        experiment = client.create_experiment(f"auth-{uuid.uuid4().hex[:6]}")
        run = client.create_run(experiment)
        client.set_terminated(run.info.run_id)
        name = f"rg-auth-{uuid.uuid4().hex[:8]}"
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(
                name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
        return name
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    db.upgrade(url)
    eng = db.make_engine(url)
    yield eng
    eng.dispose()


def set_alias(
    server: str, model: str, alias: str, version: str, auth: tuple[str, str] | None
) -> httpx.Response:
    body = {"name": model, "alias": alias, "version": version}
    return httpx.post(server + ALIAS, json=body, auth=auth, timeout=30)


def test_anonymous_client_cannot_set_an_alias(server: str, model: str) -> None:
    for alias in ("challenger", CHAMPION):
        assert set_alias(server, model, alias, "1", None).status_code == 401
    delete = httpx.request(
        "DELETE", server + ALIAS, params={"name": model, "alias": CHAMPION}, timeout=30
    )
    assert delete.status_code == 401
    # Reading is refused too: nothing is public but /health.
    assert httpx.get(server + "/api/2.0/mlflow/registered-models/search").status_code == 401


def test_reader_reads_but_cannot_set_an_alias(
    server: str, model: str, secrets: Path, as_user: Any
) -> None:
    auth = ("reader", password(secrets, "reader"))
    for alias in ("challenger", CHAMPION):
        assert set_alias(server, model, alias, "1", auth).status_code == 403
    assert [v.version for v in as_user("reader").search_model_versions(f"name='{model}'")]


def test_pipeline_sets_challenger_but_not_champion(
    server: str, model: str, secrets: Path, as_user: Any
) -> None:
    from mlflow.exceptions import MlflowException

    auth = ("pipeline", password(secrets, "pipeline"))
    assert set_alias(server, model, "challenger", "2", auth).status_code == 200
    refused = set_alias(server, model, CHAMPION, "2", auth)
    assert refused.status_code == 403
    assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert "may not set alias 'champion'" in refused.json()["message"]
    # The web UI's twin route, a differently cased alias, and MLflow's own client are refused too.
    ajax = httpx.post(
        server + ALIAS.replace("/api/", "/ajax-api/"),
        json={"name": model, "alias": CHAMPION, "version": "2"},
        auth=auth,
        timeout=30,
    )
    assert ajax.status_code == 403
    assert set_alias(server, model, "Champion", "2", auth).status_code == 403
    client = as_user("pipeline")
    with pytest.raises(MlflowException, match="may not set alias 'champion'"):
        client.set_registered_model_alias(model, CHAMPION, "2")
    assert client.get_model_version_by_alias(model, "challenger").version == "2"


def test_gate_guard_move_champion_pipeline_cannot_remove_it(
    server: str, model: str, secrets: Path, as_user: Any, engine: Engine
) -> None:
    from mlflow.exceptions import MlflowException

    gate = as_user("gate")
    first = move_champion(
        model, "1", expected=None, actor="pipeline", reason="gate", client=gate, engine=engine
    )
    assert first.outcome == "moved" and alias_version(gate, model, CHAMPION) == "1"
    guard = as_user("guard")
    second = move_champion(
        model, "2", expected="1", actor="guard", reason="guard", client=guard, engine=engine
    )
    assert second.outcome == "moved" and alias_version(guard, model, CHAMPION) == "2"

    pipeline = as_user("pipeline")
    with pytest.raises(MlflowException, match="may not delete alias 'champion'"):
        pipeline.delete_registered_model_alias(model, CHAMPION)
    with pytest.raises(MlflowException, match="which holds alias 'champion'"):
        pipeline.delete_model_version(model, "2")
    with pytest.raises(MlflowException, match="which has alias 'champion'"):
        pipeline.delete_registered_model(model)
    with pytest.raises(MlflowException, match="rename registered model"):
        pipeline.rename_registered_model(model, model + "-renamed")
    # The body of a DELETE is read by MLflow whatever its Content-Type (text/plain, none): the
    # rule reads it the same way (a new user's attack found the gap).
    auth = ("pipeline", password(secrets, "pipeline"))
    alias_body = json.dumps({"name": model, "alias": CHAMPION})
    version_body = json.dumps({"name": model, "version": "2"})
    for content_type in ("text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        for route, body in ((ALIAS, alias_body), (VERSION_DELETE, version_body)):
            sneaky = httpx.request(
                "DELETE",
                server + route,
                params={"name": model},
                content=body,
                headers=headers,
                auth=auth,
                timeout=30,
            )
            assert sneaky.status_code == 403, (route, content_type, sneaky.text)
    assert alias_version(as_user("reader"), model, CHAMPION) == "2"


def test_admin_still_moves_champion_out_of_band(
    server: str, model: str, secrets: Path, as_user: Any
) -> None:
    """An MLflow admin is not stopped (that is a person's right); the API detects such a move."""
    auth = ("admin", password(secrets, "admin"))
    assert set_alias(server, model, CHAMPION, "1", auth).status_code == 200
    assert alias_version(as_user("reader"), model, CHAMPION) == "1"


def test_users_job_refuses_a_wrong_admin_password_and_rotates_a_changed_one(
    server: str, secrets: Path, tmp_path: Path
) -> None:
    from rollguard.cli import app

    wrong = tmp_path / "secrets"
    wrong.mkdir()
    for user in ("admin", *USERS):
        (wrong / f"mlflow_{user}_password").write_text(password(secrets, user))
    (wrong / "mlflow_admin_password").write_text("not-the-admin-password")
    runner = CliRunner()
    args = ["stack", "mlflow-users", "--secrets-dir", str(wrong), "--tracking-uri", server]
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0
    assert "refused to authenticate admin 'admin': HTTP 401" in refused.output

    # Rotation: a new password in the secret file, the job again, and the new one is accepted.
    (wrong / "mlflow_admin_password").write_text(password(secrets, "admin"))
    (wrong / "mlflow_reader_password").write_text("rotated-" + uuid.uuid4().hex)
    assert runner.invoke(app, args).exit_code == 0
    new = ("reader", password(wrong, "reader"))
    search = httpx.get(server + "/api/2.0/mlflow/registered-models/search", auth=new, timeout=30)
    assert search.status_code == 200, search.text


def test_configured_identity_without_password_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(MlflowCredentialsError, match="is empty"):
        mlflow_client(Settings(home=tmp_path, mlflow_username="reader", mlflow_password_file=empty))
    with pytest.raises(MlflowCredentialsError, match="PASSWORD_FILE is not set"):
        mlflow_client(Settings(home=tmp_path, mlflow_username="reader"))
