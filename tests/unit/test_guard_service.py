"""The guard service's webhook edge: validation, authentication, which alerts act (no registry
call is needed for these), and the token settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry_guard.service import create_guard_app, webhook_token
from rollguard.errors import ConfigurationError
from rollguard.settings import Settings
from rollguard.store import open_store

TOKEN = "unit-webhook-token-0123456789"


def payload(alertname: str = "RollguardLiveQualityDegraded", status: str = "firing") -> dict:
    alert = {
        "status": status,
        "labels": {"alertname": alertname, "severity": "critical"},
        "annotations": {"summary": "s"},
        "startsAt": "2026-12-01T01:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollguard-guard",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": [alert],
    }


@pytest.fixture
def app_client(tmp_path: Path) -> TestClient:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    s = Settings(home=tmp_path / "home", env="test", _env_file=None, guard_token_file=token_file)  # type: ignore[call-arg]

    class NoRegistry:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            raise AssertionError(f"the registry must not be called ({name})")

    return TestClient(create_guard_app(s, client=NoRegistry(), open_engine=lambda: open_store(s)))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_bad_payload_is_422_naming_the_field(app_client: TestClient) -> None:
    body = payload()
    del body["alerts"][0]["fingerprint"]
    body["alerts"][0]["labels"] = {"severity": "critical"}
    resp = app_client.post("/v1/alerts", json=body, headers=AUTH)
    assert resp.status_code == 422
    fields = {d["field"] for d in resp.json()["details"]}
    assert {"alerts.0.fingerprint", "alerts.0.labels"} <= fields
    assert "alerts.0.fingerprint" in resp.json()["message"]
    bad_json = app_client.post(
        "/v1/alerts", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert bad_json.json()["details"][0] == {"field": "body", "problem": "not valid JSON"}
    text = app_client.post(
        "/v1/alerts", content=b"hello", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415 and text.json()["error"] == "unsupported_media_type"


def test_missing_or_wrong_token_is_401(app_client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = app_client.post("/v1/alerts", json=payload(), headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"
    # The token is checked before the body is read: no details about the payload leak.
    garbage = app_client.post(
        "/v1/alerts", content=b"garbage", headers={"Content-Type": "application/json"}
    )
    assert garbage.status_code == 401 and garbage.json()["details"] == []


def test_resolved_and_other_alerts_are_ignored(app_client: TestClient) -> None:
    body = payload(status="resolved")
    body["alerts"].append(payload("RollguardDataDrift")["alerts"][0])
    resp = app_client.post("/v1/alerts", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.text
    outcomes = [(a["alertname"], a["status"], a["outcome"]) for a in resp.json()["actions"]]
    assert outcomes == [
        ("RollguardLiveQualityDegraded", "resolved", "ignored"),
        ("RollguardDataDrift", "firing", "ignored"),
    ]


def test_healthz_and_metrics(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    text = app_client.get("/metrics").text
    assert "rollguard_exporter_store_up 1.0" in text


def test_no_token_configured_is_503(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, env="development", _env_file=None)  # type: ignore[call-arg]
    client = TestClient(create_guard_app(s, client=object(), open_engine=lambda: open_store(s)))
    resp = client.post("/v1/alerts", json=payload(), headers=AUTH)
    assert resp.status_code == 503 and resp.json()["error"] == "webhook_disabled"


def test_token_file_rules(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text("changeme\n")
    with pytest.raises(ConfigurationError, match="placeholder"):
        webhook_token(Settings(env="production", guard_token_file=f, _env_file=None))  # type: ignore[call-arg]
    assert (
        webhook_token(Settings(env="development", guard_token_file=f, _env_file=None))
        == b"changeme"
    )  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="cannot read"):
        webhook_token(Settings(guard_token_file=tmp_path / "missing", _env_file=None))  # type: ignore[call-arg]
    f.write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty"):
        webhook_token(Settings(guard_token_file=f, _env_file=None))  # type: ignore[call-arg]
    fallback = Settings(env="test", admin_token="admin-token-abcdef", _env_file=None)  # type: ignore[call-arg]
    assert webhook_token(fallback) == b"admin-token-abcdef"


def test_metrics_with_an_unreadable_store_is_200_with_store_up_zero(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, env="test", _env_file=None, admin_token=TOKEN)  # type: ignore[call-arg]

    def down():  # type: ignore[no-untyped-def]
        raise ConfigurationError("the monitoring store is at revision none")

    client = TestClient(create_guard_app(s, client=object(), open_engine=down))
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.text.strip().splitlines()[-1] == "rollguard_exporter_store_up 0.0"
    # The webhook cannot act without the store: 503, so that Alertmanager retries.
    hook = client.post("/v1/alerts", json=payload(), headers=AUTH)
    assert hook.status_code == 503 and hook.json()["error"] == "unavailable"
