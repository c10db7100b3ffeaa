"""The exporter next to what the monitor step really writes: each run records the newest week's
quality and KPI rows as ``pending`` (no value, the label has not matured) beside the matured week's
figures. The gauges must come from the newest week that has values, not vanish."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from monitoring.exporter import store_registry
from rollguard.db.models import MonitoringResult
from rollguard.settings import Settings
from rollguard.store import open_store

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_a_pending_newer_week_does_not_hide_the_matured_figures(settings: Settings) -> None:
    def row(week: str, kind: str, metric: str, value: float | None, state: str = "ok") -> dict:
        return dict(model_name="m", week=week, kind=kind, metric=metric, feature="",
                    value=value, state=state, model_version="1", computed_at=T0)  # fmt: skip

    matured, pending = "1997-05-05", "1997-06-02"
    rows = [
        row(matured, "quality", "average_precision", 0.41),
        row(matured, "quality", "degraded", 1.0, "degraded"),
        row(matured, "kpi", "lift", 3.2),
        row(pending, "quality", "average_precision", None, "pending"),
        row(pending, "quality", "degraded", None, "pending"),
        row(pending, "kpi", "lift", None, "pending"),
        row(pending, "data_drift", "drift_share", 0.25),
    ]
    engine = open_store(settings)
    with engine.begin() as conn:
        conn.execute(insert(MonitoringResult), rows)
    text = generate_latest(store_registry(lambda: engine, "m")).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("rollguard_live_quality", (("metric", "average_precision"),))] == 0.41
    # the below-expectation warning can fire
    assert got[("rollguard_live_quality_degraded", (("metric", "roc_auc"),))] == 1.0
    assert got[("rollguard_live_quality_state", (("state", "degraded"),))] == 1
    assert got[("rollguard_business_kpi", (("kpi", "lift"), ("targeting", "model")))] == 3.2
    assert got[("rollguard_dataset_drift_share", ())] == 0.25
    week = datetime(1997, 6, 2, tzinfo=UTC).timestamp()
    assert got[("rollguard_monitoring_week_timestamp_seconds", ())] == week
