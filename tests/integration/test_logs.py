"""Structured logs of the real model server (uvicorn, a real MLflow registry, the SQLite store;
docs/logs.md): with its stderr in a file, every line is one JSON object; the lines written while
answering a request carry its ``X-Request-ID``, the serving model version and the use case; an
API key, an MLflow password file's content, the admin token and the request bodies' values never
appear."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from rollguard import apikeys
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.support.api_models import (
    EXAMPLE_ROW,
    cdnow_features,
    log_registered_version,
    train_booster,
)
from tests.support.api_servers import start_api

TOKEN = "logs-admin-token-" + uuid.uuid4().hex
# Feature values no log line has any other reason to hold.
CANARY_ROW = {**EXAMPLE_ROW, "monetary_total": 7351.98642, "spend_26w": 6180.33989}


@pytest.fixture(scope="module")
def served_model(mlflow_server: str) -> tuple[str, str, str]:
    from mlflow import MlflowClient

    name = f"logs-test-{uuid.uuid4().hex[:8]}"
    version = log_registered_version(train_booster(seed=2, rounds=5), name, mlflow_server)
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", version)
    return mlflow_server, name, version


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    features = home / "warehouse" / "features"
    features.mkdir(parents=True)
    frame = cdnow_features()
    frame[frame["cutoff"] == frame["cutoff"].max()].to_parquet(
        features / "cutoff=1997-06-02.parquet"
    )
    return home


def test_api_lines_are_json_with_request_fields_and_no_secrets(
    served_model: tuple[str, str, str], tmp_path: Path
) -> None:
    tracking, name, version = served_model
    home = _home(tmp_path)
    key = apikeys.create_key(open_store(Settings(home=home)), "crm").key
    wrong_key = "rg_" + uuid.uuid4().hex
    password = "mlflow-pw-" + uuid.uuid4().hex
    password_file = tmp_path / "mlflow.password"
    password_file.write_text(password + "\n")
    body_canary = "body-canary-" + uuid.uuid4().hex
    query_secret = "query-secret-" + uuid.uuid4().hex
    request_id = "logs-" + uuid.uuid4().hex[:12]
    # ROLLGUARD_LOG_FORMAT unset: "auto", and stderr is a file, so JSON lines.
    server = start_api(
        home,
        tracking,
        name,
        tmp_path / "logs",
        token=TOKEN,
        ROLLGUARD_API_KEYS="true",
        ROLLGUARD_LOG_ACCESS="true",
        # The tracking server is open: MLflow sends the credentials and nothing checks them.
        ROLLGUARD_MLFLOW_USERNAME="reader",
        ROLLGUARD_MLFLOW_PASSWORD_FILE=str(password_file),
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ok = client.post(
                "/v1/predict",
                json={"rows": [CANARY_ROW]},
                headers={"X-Request-ID": request_id, "X-API-Key": key},
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["model_version"] == version
            refused = client.post(
                f"/v1/predict?api_key={query_secret}",
                json={"rows": [CANARY_ROW]},
                headers={"X-Request-ID": request_id + "-refused", "X-API-Key": wrong_key},
            )
            assert refused.status_code in (401, 403), refused.text
            invalid = client.post(
                "/v1/predict",
                json={"rows": [{**CANARY_ROW, "note": body_canary}]},
                headers={"X-API-Key": key},
            )
            assert invalid.status_code == 422, invalid.text
            reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert reload.status_code == 200, reload.text
    finally:
        server.stop()
    text = server.log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object

    # Start-up lines (uvicorn's included) went through the same renderer.
    assert any(r["logger"].startswith("uvicorn") for r in records), text[-3000:]
    assert all(r["usecase"] == "cdnow" and r["service"] == "api" for r in records), text[-3000:]
    assert all({"timestamp", "level", "event"} <= r.keys() for r in records)

    ours = [r for r in records if r.get("request_id") == request_id]
    access = [r for r in ours if r["logger"] == "rollguard.access"]
    assert len(access) == 1, ours
    assert access[0]["status"] == 200
    assert access[0]["path"] == "/v1/predict"
    assert access[0]["model_version"] == version
    assert access[0]["duration_ms"] > 0
    refused_line = [r for r in records if r.get("request_id") == request_id + "-refused"]
    assert [r["status"] for r in refused_line] == [refused.status_code]
    assert refused_line[0]["path"] == "/v1/predict"  # the query string is not logged
    # The generated id of a request without X-Request-ID is the one its answer names.
    assert invalid.headers["X-Request-ID"] in {r.get("request_id") for r in records}
    # The model swap line names the version it serves.
    assert any(r.get("model_version") == version and "serving" in r["event"] for r in records), (
        text[-3000:]
    )

    for secret in (key, wrong_key, password, TOKEN, query_secret, body_canary):
        assert secret not in text, f"{secret[:12]}... appears in the API's log"
    for value in ("7351.98642", "6180.33989"):
        assert value not in text, f"request body value {value} appears in the API's log"
