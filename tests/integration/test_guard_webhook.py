"""The guard's decision per alert against a real MLflow registry and store (no Prometheus):
rollback, stale evidence, cooldown refusal, and evidence in the audit row."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlflow import MlflowClient
from sqlalchemy import insert, select

from registry_guard import registry
from registry_guard.service import WebhookPayload, handle_alert
from rollguard.db.models import AliasAudit, GuardCheckRow, MonitoringResult
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.support.alert_stack import register_versions

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def payload(starts_at: datetime, fingerprint: str = "f00dfeed12345678") -> WebhookPayload:
    return WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": "g",
            "status": "firing",
            "receiver": "rollguard-guard",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "RollguardLiveQualityDegraded", "severity": "critical"},
                    "annotations": {"summary": "degraded"},
                    "startsAt": starts_at.isoformat(),
                    "fingerprint": fingerprint,
                }
            ],
        }
    )


def test_rollback_then_stale_then_cooldown(tmp_path: Path, mlflow_server: str) -> None:
    s = Settings(  # type: ignore[call-arg]
        home=tmp_path / "home", env="test", _env_file=None, mlflow_tracking_uri=mlflow_server,
        model_name=f"webhook-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    engine = open_store(s)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    v1, v2 = register_versions(mlflow_server, s.model_name, engine)

    def act(starts_at: datetime):  # type: ignore[no-untyped-def]
        p = payload(starts_at)
        return handle_alert(p.alerts[0], settings=s, client=client, engine=engine, payload=p)

    # The monitor step's below-expectation figure is not rollback evidence, and an alert with no
    # degraded guard check behind it changes nothing.
    with engine.begin() as conn:
        conn.execute(
            insert(MonitoringResult).values(
                model_name=s.model_name, week="1997-06-02", model_version=v2, kind="quality",
                metric="degraded", feature="", value=1.0, state="degraded", computed_at=T0,
            )
        )  # fmt: skip
    unproven = act(T0 - timedelta(hours=1))
    assert unproven.outcome == "no_evidence"
    assert registry.alias_version(client, s.model_name, registry.CHAMPION) == v2

    with engine.begin() as conn:
        conn.execute(
            insert(GuardCheckRow).values(
                model_name=s.model_name, champion_version=v2, state="degraded",
                reason="realized quality worse than the previous champion", report="{}",
                checked_at=T0,
            )
        )  # fmt: skip

    first = act(T0)
    assert (first.outcome, first.from_version, first.to_version) == ("rolled_back", v2, v1)
    assert registry.alias_version(client, s.model_name, registry.CHAMPION) == v1
    with engine.connect() as conn:
        row = conn.execute(
            select(AliasAudit.__table__).where(AliasAudit.id == first.audit_id)
        ).one()
    evidence = json.loads(row.evidence)
    assert row.actor == "alert" and evidence["alert"]["fingerprint"] == "f00dfeed12345678"
    assert evidence["degraded_versions"] == [v2]

    # The same alert firing again later (new startsAt): the champion is no longer the degraded one.
    later = act(T0 + timedelta(hours=1))
    assert later.outcome == "stale" and registry.read_pointer(engine, s.model_name) == v1

    # A human forces v2 back; a new incident within the cooldown is refused and audited.
    registry.move_champion(
        s.model_name, v2, expected=v1, actor="human", reason="test", client=client, engine=engine
    )
    refused = act(T0 + timedelta(hours=2))
    assert refused.outcome == "refused" and "cooldown" in refused.detail
    assert registry.read_pointer(engine, s.model_name) == v2
    history = registry.history(engine, s.model_name)
    assert (history[0].action, history[0].outcome, history[0].actor) == (
        "rollback",
        "refused",
        "alert",
    )
    engine.dispose()
