"""Alert-driven rollback end to end with the real binaries: the model server and the guard are
scraped by Prometheus (rules loaded), Alertmanager routes the rollback trigger to the guard, and the
guard moves ``champion`` back. Configs are generated from the shipped ones with 1 s intervals."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from registry_guard import registry
from tests.support.alert_stack import (
    TEST_INTERVALS,
    TOKEN,
    TRIGGER,
    AlertStack,
    measure_rollback,
    missing_binaries,
    start_stack,
    targets_up,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(mlflow_server: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    s = start_stack(tmp_path / "stack", mlflow_server, TEST_INTERVALS)
    yield s
    s.stop()
    print(s.logs())  # pytest shows captured output only when the test failed


def metric_value(url: str, name: str) -> float | None:
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_degradation_alert_rolls_back_and_the_api_serves_the_previous_version(
    stack: AlertStack,
) -> None:
    wait_until(lambda: targets_up(stack), 60, "Prometheus scraping API and guard")
    assert metric_value(stack.guard.url, "rollguard_champion_version") == float(stack.v2)
    assert metric_value(stack.guard.url, "rollguard_exporter_store_up") == 1.0

    timing = measure_rollback(stack, timeout=120)
    print(
        f"\ninjected degradation -> rollback audit row: {timing.rolled_back:.2f} s; "
        f"-> first /v1/model answer from the restored version {stack.v1}: {timing.restored:.2f} s "
        f"(test intervals: scrape/evaluation/for/group_wait 1 s, API poll 0.5 s)"
    )
    name = stack.settings.model_name
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=stack.settings.tracking_uri, registry_uri=stack.settings.tracking_uri
    )
    assert registry.read_pointer(stack.engine, name) == stack.v1
    assert registry.alias_version(client, name, registry.CHAMPION) == stack.v1
    assert registry.version_status(client.get_model_version(name, stack.v2)) == "rolled_back"
    moved = [r for r in stack.rollbacks() if r.outcome == "moved"]
    assert len(moved) == 1
    row = moved[0]
    assert (row.actor, row.from_version, row.to_version) == ("alert", stack.v2, stack.v1)
    evidence = json.loads(row.evidence)
    alert = evidence["alert"]
    assert alert["labels"]["alertname"] == TRIGGER
    assert alert["labels"]["severity"] == "critical"
    assert "runbook_url" in alert["annotations"] and alert["startsAt"]
    assert row.fingerprint == f"alert:{alert['fingerprint']}:{alert['startsAt']}"

    # A predict response names the restored version too.
    from tests.support.api_models import example_frame

    resp = httpx.post(
        stack.api.url + "/v1/predict", json={"rows": example_frame(2).to_dict("records")}
    )
    assert resp.status_code == 200 and resp.json()["model_version"] == stack.v1

    # The exporter reports the rollback; Prometheus sees the counter from the store.
    wait_until(
        lambda: metric_value(stack.guard.url, "rollguard_champion_version") == float(stack.v1),
        30,
        "exported champion version",
    )
    text = httpx.get(stack.guard.url + "/metrics").text
    assert 'rollguard_rollbacks_total{actor="alert"} 1.0' in text


def replay_payload(stack: AlertStack) -> dict:
    """The webhook Alertmanager sent, rebuilt from the alert stored as evidence (same fingerprint
    and startsAt)."""
    row = next(r for r in stack.rollbacks() if r.outcome == "moved")
    alert = json.loads(row.evidence)["alert"]
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{TRIGGER}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollguard-guard",
        "groupLabels": {"alertname": TRIGGER},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": stack.alertmanager.url,
        "alerts": [
            {
                "status": "firing",
                "labels": alert["labels"],
                "annotations": alert["annotations"],
                "startsAt": alert["startsAt"],
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": alert.get("generatorURL", ""),
                "fingerprint": alert["fingerprint"],
            }
        ],
    }


def test_replayed_webhook_does_not_roll_back_twice_and_a_bad_token_changes_nothing(
    stack: AlertStack,
) -> None:
    wait_until(lambda: targets_up(stack), 60, "Prometheus scraping API and guard")
    measure_rollback(stack, timeout=120)
    before = stack.rollbacks()
    payload = replay_payload(stack)

    # Put v2 back by hand: a replay must still not roll it back again (same alert, same incident).
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=stack.settings.tracking_uri, registry_uri=stack.settings.tracking_uri
    )
    registry.move_champion(
        stack.settings.model_name, stack.v2, expected=stack.v1, actor="human",
        reason="test: forced back", client=client, engine=stack.engine,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = httpx.post(stack.guard.url + "/v1/alerts", json=payload, headers=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    action = resp.json()["actions"][0]
    assert action["outcome"] == "replayed", action
    assert registry.read_pointer(stack.engine, stack.settings.model_name) == stack.v2
    assert [r.id for r in stack.rollbacks()] == [r.id for r in before]

    for headers in ({"Authorization": "Bearer wrong-token"}, {}):
        bad = httpx.post(stack.guard.url + "/v1/alerts", json=payload, headers=headers, timeout=30)
        assert bad.status_code == 401, bad.text
        assert bad.json()["error"] == "unauthorized"
    assert registry.read_pointer(stack.engine, stack.settings.model_name) == stack.v2
    assert [r.id for r in stack.rollbacks()] == [r.id for r in before]
