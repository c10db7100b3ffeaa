"""API keys against the real model server (uvicorn, a real MLflow registry, the SQLite store):
no key -> 401, unknown or revoked -> 403, valid -> 200, over the rate -> 429 with Retry-After,
and the key id (never the key) in the prediction log and the metrics. With keys off the routes
stay open and requests are counted as ``anonymous``."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from rollguard import apikeys
from rollguard.db.models import PredictionLogRow
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.support.api_models import (
    EXAMPLE_ROW,
    cdnow_features,
    log_registered_version,
    train_booster,
)
from tests.support.api_servers import start_api, wait_for

TOKEN = "integration-admin-token-0123456789"
BODY = {"rows": [EXAMPLE_ROW]}


@pytest.fixture(scope="module")
def served_model(mlflow_server: str) -> tuple[str, str]:
    from mlflow import MlflowClient

    name = f"keys-test-{uuid.uuid4().hex[:8]}"
    version = log_registered_version(train_booster(seed=1, rounds=5), name, mlflow_server)
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", version)
    return mlflow_server, name


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    features = home / "warehouse" / "features"
    features.mkdir(parents=True)
    frame = cdnow_features()
    frame[frame["cutoff"] == frame["cutoff"].max()].to_parquet(
        features / "cutoff=1997-06-02.parquet"
    )
    return home


def _metric_lines(base_url: str, name: str) -> list[str]:
    return [
        line for line in httpx.get(base_url + "/metrics").text.splitlines() if line.startswith(name)
    ]


def test_keys_on_401_403_200_429_and_key_ids_only(
    served_model: tuple[str, str], tmp_path: Path
) -> None:
    tracking, name = served_model
    home = _home(tmp_path)
    engine = open_store(Settings(home=home))
    good = apikeys.create_key(engine, "crm").key
    revoked = apikeys.create_key(engine, "old-client")
    apikeys.revoke_key(engine, revoked.info.key_id)
    limited = apikeys.create_key(engine, "burst").key
    server = start_api(
        home,
        tracking,
        name,
        tmp_path / "logs",
        token=TOKEN,
        ROLLGUARD_API_KEYS="true",
        ROLLGUARD_API_KEY_RATE="12/minute",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Open routes stay open.
            for path in ("/healthz", "/readyz", "/v1/model", "/v1/usecase", "/openapi.json"):
                assert client.get(path).status_code == 200, path

            missing = client.post("/v1/predict", json=BODY)
            assert missing.status_code == 401
            assert missing.headers["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'
            body = missing.json()
            assert body["error"] == "missing_api_key"
            assert set(body) == {"error", "message", "details", "request_id"}
            assert body["details"][0]["field"] == "header.X-API-Key"
            assert missing.headers["X-Request-ID"] == body["request_id"]

            malformed = client.post("/v1/explain", json=BODY, headers={"X-API-Key": "secret"})
            assert malformed.status_code == 401
            assert malformed.json()["error"] == "malformed_api_key"

            entity = client.get("/v1/customers/1/prediction")
            assert entity.status_code == 401

            unknown_key = apikeys.generate_key()
            unknown = client.post("/v1/predict", json=BODY, headers={"X-API-Key": unknown_key})
            assert unknown.status_code == 403
            assert unknown.json()["error"] == "invalid_api_key"
            assert "WWW-Authenticate" not in unknown.headers
            # A known key id with a wrong secret is as unknown as any other key.
            forged = good[:12] + ("A" if good[12] != "A" else "B") + good[13:]
            assert (
                client.post("/v1/predict", json=BODY, headers={"X-API-Key": forged}).status_code
                == 403
            )

            gone = client.post("/v1/predict", json=BODY, headers={"X-API-Key": revoked.key})
            assert gone.status_code == 403
            assert gone.json()["error"] == "revoked_api_key"
            assert revoked.info.key_id in gone.json()["message"]

            ok = client.post("/v1/predict", json=BODY, headers={"X-API-Key": good})
            assert ok.status_code == 200, ok.text
            request_id = ok.json()["request_id"]
            assert (
                client.post("/v1/explain", json=BODY, headers={"X-API-Key": good}).status_code
                == 200
            )
            by_id = client.get("/v1/customers/1/prediction", headers={"X-API-Key": good})
            assert by_id.status_code in (200, 404), by_id.text  # 404: customer not in snapshot

            # Over the rate: 12 per minute per key, the 13th is refused with Retry-After.
            codes = [
                client.post("/v1/predict", json=BODY, headers={"X-API-Key": limited}).status_code
                for _ in range(13)
            ]
            assert codes == [200] * 12 + [429]
            over = client.post("/v1/predict", json=BODY, headers={"X-API-Key": limited})
            assert over.status_code == 429
            assert 1 <= int(over.headers["Retry-After"]) <= 60
            assert over.json()["error"] == "rate_limited"
            # Another key has its own window.
            assert (
                client.post("/v1/predict", json=BODY, headers={"X-API-Key": good}).status_code
                == 200
            )

        key_id = good[3:11]
        wait_for(
            lambda: _logged(engine, request_id) is not None, timeout=30, what="prediction log row"
        )
        row = _logged(engine, request_id)
        assert row is not None and row.key_id == key_id
        assert good not in row.features

        metrics_text = httpx.get(server.url + "/metrics").text
        assert good not in metrics_text and good[12:] not in metrics_text
        lines = _metric_lines(server.url, "rollguard_api_requests_by_key_total{")
        assert (
            f'rollguard_api_requests_by_key_total{{key_id="{key_id}",outcome="accepted",'
            'route="/v1/predict"} 2.0' in lines
        )
        assert any(f'key_id="{limited[3:11]}"' in x and "rate_limited" in x for x in lines)
        assert any('key_id="unknown"' in x and 'outcome="unknown"' in x for x in lines)
        assert any('key_id="none"' in x and 'outcome="missing"' in x for x in lines)
        assert unknown_key[3:11] not in metrics_text  # ids of keys not in the store: no series

        spec = httpx.get(server.url + "/openapi.json").json()
        assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
        assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"ApiKey": []}]
        assert "security" not in spec["paths"]["/v1/model"]["get"]
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()
        engine.dispose()


def _logged(engine, request_id: str):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(
            select(PredictionLogRow).where(PredictionLogRow.request_id == request_id)
        ).first()


def test_keys_off_routes_are_open_and_counted_as_anonymous(
    served_model: tuple[str, str], tmp_path: Path
) -> None:
    tracking, name = served_model
    home = _home(tmp_path)
    server = start_api(home, tracking, name, tmp_path / "logs", token=TOKEN)
    try:
        resp = httpx.post(server.url + "/v1/predict", json=BODY, timeout=30)
        assert resp.status_code == 200, resp.text
        lines = _metric_lines(server.url, "rollguard_api_requests_by_key_total{")
        assert (
            'rollguard_api_requests_by_key_total{key_id="anonymous",outcome="accepted",'
            'route="/v1/predict"} 1.0' in lines
        )
        engine = open_store(Settings(home=home))
        request_id = resp.json()["request_id"]
        wait_for(lambda: _logged(engine, request_id) is not None, timeout=30, what="log row")
        assert _logged(engine, request_id).key_id is None
        engine.dispose()
        schemes = httpx.get(server.url + "/openapi.json").json()["components"]["securitySchemes"]
        assert "ApiKey" not in schemes
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()


def test_a_bad_rate_setting_refuses_to_start(served_model: tuple[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    tracking, name = served_model
    proc = subprocess.run(
        [sys.executable, "-m", "api", "--port", "1"],
        env={
            "PATH": "/usr/bin:/bin",
            "ROLLGUARD_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": tracking,
            "ROLLGUARD_MODEL_NAME": name,
            "ROLLGUARD_API_KEYS": "true",
            "ROLLGUARD_API_KEY_RATE": "lots",
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2, proc.stderr
    assert "ROLLGUARD_API_KEY_RATE" in proc.stderr


def test_the_ui_client_sends_its_own_key(served_model: tuple[str, str], tmp_path: Path) -> None:
    """The UI's client reads ROLLGUARD_API_KEY_FILE and calls the real keyed API with it; the
    key registered from that file (``rollguard apikey create ui --from-file``) is the UI's."""
    from ui.client import ApiError, RollguardClient, read_api_key
    from ui.formatting import error_message

    tracking, name = served_model
    home = _home(tmp_path)
    key_file = tmp_path / "ui_api_key"
    key_file.write_text(apikeys.generate_key() + "\n")
    engine = open_store(Settings(home=home))
    first = apikeys.create_key(engine, "ui", key=key_file.read_text())
    again = apikeys.create_key(engine, "ui", key=key_file.read_text())
    assert first.created and not again.created  # registering the file twice changes nothing
    server = start_api(
        home, tracking, name, tmp_path / "logs", token=TOKEN, ROLLGUARD_API_KEYS="true"
    )
    try:
        ui_client = RollguardClient(server.url, 30, api_key=read_api_key(key_file))
        answer = ui_client.predict([EXAMPLE_ROW])
        assert len(answer["scores"]) == 1
        assert ui_client.model_info()["model_name"] == name
        wait_for(
            lambda: _logged(engine, answer["request_id"]) is not None, timeout=30, what="log row"
        )
        assert _logged(engine, answer["request_id"]).key_id == first.info.key_id

        anonymous = RollguardClient(server.url, 30)
        with pytest.raises(ApiError) as caught:
            anonymous.predict([EXAMPLE_ROW])
        assert caught.value.kind == "unauthorized" and caught.value.status == 401
        assert "ROLLGUARD_API_KEY_FILE" in error_message(caught.value)
        ui_client.close()
        anonymous.close()
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()
        engine.dispose()


def test_the_ui_process_asks_for_a_login_from_its_auth_file(
    served_model: tuple[str, str], tmp_path: Path
) -> None:
    """The real UI process (``python -m ui``) with ROLLGUARD_UI_AUTH_FILE and its key file,
    against the keyed API: Gradio refuses its config before a log-in, accepts the file's user."""
    from tests.support.ui_stack import start_ui

    tracking, name = served_model
    home = _home(tmp_path)
    key_file = tmp_path / "ui_api_key"
    key_file.write_text(apikeys.generate_key())
    engine = open_store(Settings(home=home))
    apikeys.create_key(engine, "ui", key=key_file.read_text())
    engine.dispose()
    auth_file = tmp_path / "ui_auth"
    auth_file.write_text("rollguard:correct-horse-battery\n")
    api = start_api(home, tracking, name, tmp_path / "logs", token=TOKEN, ROLLGUARD_API_KEYS="true")
    ui = None
    try:
        ui = start_ui(
            api.url,
            tmp_path / "ui-logs",
            timeout_seconds=30,
            ROLLGUARD_API_KEY_FILE=str(key_file),
            ROLLGUARD_UI_AUTH_FILE=str(auth_file),
        )
        with httpx.Client(base_url=ui.url, timeout=30) as browser:
            assert browser.get("/config").status_code == 401
            wrong = browser.post("/login", data={"username": "rollguard", "password": "nope"})
            assert wrong.status_code == 400
            right = browser.post(
                "/login", data={"username": "rollguard", "password": "correct-horse-battery"}
            )
            assert right.status_code == 200, right.text
            assert browser.get("/config").status_code == 200
    except BaseException:
        print(api.log_tail())
        if ui is not None:
            print(ui.log_tail())
        raise
    finally:
        if ui is not None:
            ui.stop()
        api.stop()
