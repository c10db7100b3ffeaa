"""Prometheus export of the monitoring store: a custom collector that reads the store on every scrape.

Why a store-reading collector and not the Pushgateway
-----------------------------------------------------
Every figure exported here (drift, live quality, KPIs, gate decisions, rollbacks, guard state, last
pipeline run) is already written to the monitoring store by the step that computes it, in the same
transaction as its other effects. Reading the store on each scrape makes the store the only source of
truth: a restart of the exporter, of Prometheus or of the step that wrote the figure loses nothing, and
the export can never disagree with what Grafana reads from the same tables. The Pushgateway would add a
second copy that is lost when the gateway restarts without persistence, keeps stale groups forever
(Prometheus' own docs advise it only for service-level batch jobs), and needs every writer to push in
the right order. Counters (``*_total``) are counted from the store's rows, so they never reset except
when the store itself is wiped.

A store that cannot be read is a normal scrape with ``rollguard_exporter_store_up 0`` and no other
series (never an HTTP 500), so Prometheus keeps the target ``up`` and the alert on the store fires.

Newest week: every gauge of a monitoring ``kind`` refers to the newest ``week`` that has rows with a
value of that kind for the configured model (quality and KPI figures exist for the newest *matured*
cutoff, which is older than the newest drift week; the newer week's ``pending`` rows do not hide
them). Rows whose ``value`` is NULL (states ``pending``, ``no_data``,
``skipped``, ``schema_mismatch``) produce no sample.

Feature states: a feature that cannot be compared has no drift figure, which on a dashboard or in
an alert looks like a feature without drift. So every feature of the use case also gets
``rollguard_feature_state{model, feature, state}``, one series per state of :data:`FEATURE_STATES`
(1 for the feature's state in the newest week with ``data_drift`` rows, 0 for the others; all 0
when that week has no row for the feature), read from the state and the stable skip reason
(:func:`monitoring.compute.skip_reason`) of its ``drifted`` row. Beside it
``rollguard_feature_varies_weekly{model, feature}`` and ``rollguard_data_schema_mismatch{model}``.

Guard evidence: beside ``rollguard_guard_state{state}`` the newest guard check's report (the JSON
``report`` column of ``guard_checks``, :meth:`registry_guard.guard.GuardReport.to_json`) gives, per
check (``score_shift``, ``realized_quality``), ``rollguard_guard_check_verdict{check, verdict}`` (1
for its verdict among :data:`GUARD_VERDICTS`) and ``rollguard_guard_evidence{check, figure}`` for
each figure of :data:`GUARD_EVIDENCE` the check has (a figure it lacks, e.g. the interval of the
shift check, has no sample): what the guard waited for (rows, positives) and the interval it read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from monitoring.compute import DATA_DRIFT, VARIES_WEEKLY, VERDICT_STATES, skip_reason
from rollguard.db.models import (
    AliasAudit,
    ChampionPointer,
    GateDecisionRow,
    GuardCheckRow,
    MonitoringResult,
    PipelineRun,
)

log = logging.getLogger(__name__)

#: Guard states exported as ``rollguard_guard_state{state}`` (always all three series).
GUARD_STATES = ("ok", "degraded", "inconclusive")
#: Checks of the guard report exported per check (``registry_guard.guard`` names).
GUARD_CHECKS = ("score_shift", "realized_quality")
#: Verdicts of ``rollguard_guard_check_verdict{check, verdict}`` (always all four per check).
GUARD_VERDICTS = ("ok", "degraded", "inconclusive", "skip")
#: Figures of ``rollguard_guard_evidence{check, figure}``: evidence rows and positives, the
#: check's value (PSI, or the champion-minus-previous difference), its threshold and the bootstrap
#: interval of the difference.
GUARD_EVIDENCE = ("n_rows", "n_positives", "value", "threshold", "ci_low", "ci_high")
#: Gate decisions exported as ``rollguard_gate_decisions_total{decision}`` (always present, 0 at first).
GATE_DECISIONS = ("promote", "reject", "bootstrap")
#: Actors of rollbacks exported as ``rollguard_rollbacks_total{actor}`` (always present).
ROLLBACK_ACTORS = ("guard", "alert", "human")
#: Score quantiles: label value -> ``monitoring_results.metric`` of kind ``score_drift``.
SCORE_QUANTILES = {"0.5": "score_p50", "0.9": "score_p90", "0.99": "score_p99"}
#: Business KPIs: ``monitoring_results.metric`` of kind ``kpi`` -> (kpi label, targeting label).
#: Binary classification: the model's targeting and a random pick of the same budget (which
#: targets as many rows as the model does). Regression: the model's errors and totals; the
#: declared baselines' errors come from the rows ``baseline_mae``/``baseline_bias`` with the
#: baseline's name in ``feature`` (targeting label = that name).
KPI_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "targeted_count": (("targeted_count", "model"), ("targeted_count", "random")),
    "targeted_positive_rate": (("positive_rate", "model"),),
    "random_positive_rate": (("positive_rate", "random"),),
    "lift": (("lift", "model"),),
    "random_lift": (("lift", "random"),),
    "targeted_value": (("value", "model"),),
    "random_value": (("value", "random"),),
    "targeted_value_share": (("value_share", "model"),),
    "random_value_share": (("value_share", "random"),),
    "rows": (("rows", "model"),),
    "mae": (("mae", "model"),),
    "bias": (("bias", "model"),),
    "value_weighted_mae": (("value_weighted_mae", "model"),),
    "predicted_total": (("total", "model"),),
    "realized_total": (("total", "realized"),),
    "value_total": (("value", "realized"),),
}
#: Per-baseline KPI rows (``feature`` = baseline name) -> kpi label.
BASELINE_KPIS = {"baseline_mae": "mae", "baseline_bias": "bias"}
#: Live-quality figures exported as ``rollguard_live_quality{metric}`` (both task types).
LIVE_QUALITY = (
    "average_precision",
    "roc_auc",
    "brier",
    "precision_at_budget",
    "mae",
    "rmse",
    "bias",
)
#: States of ``rollguard_feature_state{state}`` (always all five series per feature): compared
#: (``ok``, ``drifted``), skipped because constant or all missing (``skipped_constant``,
#: ``skipped_missing``), or absent from a side's columns (``schema_mismatch``).
FEATURE_STATES = ("ok", "drifted", "skipped_constant", "skipped_missing", "schema_mismatch")
#: Metrics the ``degraded`` rule judges (ROC AUC for classification, MAE for regression; exported
#: as the ``metric`` label of ``rollguard_live_quality_degraded``).
JUDGED = ("roc_auc", "mae")


@dataclass(frozen=True)
class StoreSnapshot:
    """What one scrape read from the store for one model (plain data; see :func:`read_snapshot`).

    Attributes:
        figures: ``{kind: {(metric, feature): value}}`` of the newest week of each kind, non-NULL only.
        newest_week: newest ``week`` (cutoff date) of any monitoring row, or None.
        guard_state: state of the newest guard check, or None when never checked.
        guard_checks: ``{check: (verdict, {figure: value})}`` of that check's report (finite
            figures of :data:`GUARD_EVIDENCE` only); empty when never checked or unreadable.
        quality_state: state of the newest live-quality verdict (``quality``/``degraded`` row in
            ``ok``, ``degraded`` or ``inconclusive``), or None.
        gate_counts: ``{outcome: number of gate_decisions rows}``.
        rollback_counts: ``{actor: number of rollbacks that moved the alias}``.
        last_rollback: time of the newest moved rollback, or None.
        champion_version: version in ``champion_pointer``, or None.
        pipelines: ``{dag_id: (last success finished_at or None, newest run failed)}``.
        model_name: the model exported.
        feature_states: ``{feature: state of FEATURE_STATES}`` of the newest week with
            ``data_drift`` rows (features whose state is not known are absent).
        feature_varies: ``{feature: 0/1}`` ``varies_weekly`` figures of that week.
        schema_mismatch: that week's ``schema`` figure (0 ok, 1 mismatch), or None.
        features: the features that get ``rollguard_feature_state`` series (the use case's when
            given to :func:`read_snapshot`, else those of that week's rows).
    """

    figures: dict[str, dict[tuple[str, str], float]]
    newest_week: date | None
    guard_state: str | None
    quality_state: str | None
    gate_counts: dict[str, int]
    rollback_counts: dict[str, int]
    last_rollback: datetime | None
    champion_version: str | None
    pipelines: dict[str, tuple[datetime | None, bool]]
    model_name: str = ""
    feature_states: dict[str, str] = field(default_factory=dict)
    feature_varies: dict[str, float] = field(default_factory=dict)
    schema_mismatch: float | None = None
    features: tuple[str, ...] = ()
    guard_checks: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)


def _guard_checks(report: str | None) -> dict[str, tuple[str, dict[str, float]]]:
    """``{check: (verdict, {figure: value})}`` of a stored guard report (JSON); a report that is
    not readable JSON gives ``{}`` (logged), as a scrape must not fail on one bad row."""
    if not report:
        return {}
    try:
        checks = json.loads(report).get("checks") or []
    except (ValueError, AttributeError) as exc:
        log.warning("guard report not readable: %s", exc)
        return {}
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for check in checks:
        name, verdict = check.get("name"), check.get("verdict")
        if name not in GUARD_CHECKS or verdict not in GUARD_VERDICTS:
            continue
        figures = {
            f: float(check[f])
            for f in GUARD_EVIDENCE
            if isinstance(check.get(f), int | float) and not isinstance(check.get(f), bool)
        }
        out[name] = (verdict, figures)
    return out


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _newest_figures(conn: Connection, model_name: str) -> dict[str, dict[tuple[str, str], float]]:
    newest = (
        select(MonitoringResult.kind, func.max(MonitoringResult.week).label("week"))
        # A newer week whose figures have no value yet (quality and KPIs are ``pending`` until
        # the label matures) must not hide the newest week that has them.
        .where(MonitoringResult.model_name == model_name, MonitoringResult.value.is_not(None))
        .group_by(MonitoringResult.kind)
        .subquery()
    )
    rows = conn.execute(
        select(
            MonitoringResult.kind,
            MonitoringResult.metric,
            MonitoringResult.feature,
            MonitoringResult.value,
        )
        .join(
            newest,
            (newest.c.kind == MonitoringResult.kind) & (newest.c.week == MonitoringResult.week),
        )
        .where(MonitoringResult.model_name == model_name, MonitoringResult.value.is_not(None))
    )
    figures: dict[str, dict[tuple[str, str], float]] = {}
    for kind, metric, feature, value in rows:
        if value is not None:
            figures.setdefault(kind, {})[(metric, feature or "")] = float(value)
    return figures


def feature_state(state: str, detail: str | None) -> str | None:
    """The :data:`FEATURE_STATES` value of a feature's ``data_drift`` row (its ``state`` and
    ``detail``), or None when it says nothing about the feature's usability."""
    if state == "skipped":
        reason = skip_reason(detail)
        return f"skipped_{reason}" if reason is not None else None
    return {"ok": "ok", "drift": "drifted", "schema_mismatch": "schema_mismatch"}.get(state)


def _feature_week(
    conn: Connection, model_name: str
) -> tuple[dict[str, str], dict[str, float], float | None]:
    """Feature states, ``varies_weekly`` figures and the ``schema`` figure of the newest week
    with ``data_drift`` rows of ``model_name`` (any value, NULL included: a week where every
    feature was skipped is exactly the week to show)."""
    week = conn.execute(
        select(func.max(MonitoringResult.week)).where(
            MonitoringResult.model_name == model_name, MonitoringResult.kind == DATA_DRIFT
        )
    ).scalar_one_or_none()
    states: dict[str, str] = {}
    varies: dict[str, float] = {}
    schema = None
    if week is None:
        return states, varies, schema
    rows = conn.execute(
        select(
            MonitoringResult.metric,
            MonitoringResult.feature,
            MonitoringResult.value,
            MonitoringResult.state,
            MonitoringResult.detail,
        ).where(
            MonitoringResult.model_name == model_name,
            MonitoringResult.kind == DATA_DRIFT,
            MonitoringResult.week == week,
            MonitoringResult.metric.in_(("drifted", "drift_score", VARIES_WEEKLY, "schema")),
        )
    )
    # ``drifted`` and ``drift_score`` carry the same state; ``drifted`` wins when both exist.
    for metric, feature, value, state, detail in sorted(rows, key=lambda r: r[0] == "drifted"):
        if metric == "schema" and not feature:
            schema = float(value) if value is not None else None
        elif metric == VARIES_WEEKLY and feature and value is not None:
            varies[feature] = float(value)
        elif metric in ("drifted", "drift_score") and feature:
            mapped = feature_state(state, detail)
            if mapped is not None:
                states[feature] = mapped
    return states, varies, schema


def read_snapshot(
    conn: Connection, model_name: str, features: Sequence[str] | None = None
) -> StoreSnapshot:
    """Read everything the exporter publishes for ``model_name`` in one connection.

    ``features`` (the use case's feature names) bound the per-feature state series: rows of other
    features are ignored and a feature without a row gets all-0 states. None: the features of the
    newest drift week's rows.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the store cannot be read (the collector turns this into
            ``rollguard_exporter_store_up 0``).
    """
    figures = _newest_figures(conn, model_name)
    feature_states, feature_varies, schema = _feature_week(conn, model_name)
    if features is None:
        features = sorted({*feature_states, *feature_varies})
    else:  # the use case's features, and only those (a bounded label set)
        feature_states = {f: feature_states[f] for f in features if f in feature_states}
        feature_varies = {f: feature_varies[f] for f in features if f in feature_varies}
    week = conn.execute(
        select(func.max(MonitoringResult.week)).where(MonitoringResult.model_name == model_name)
    ).scalar_one_or_none()
    guard = conn.execute(
        select(GuardCheckRow.state, GuardCheckRow.report)
        .where(GuardCheckRow.model_name == model_name)
        .order_by(GuardCheckRow.checked_at.desc(), GuardCheckRow.id.desc())
        .limit(1)
    ).first()
    guard_state = guard.state if guard is not None else None
    quality_state = conn.execute(
        select(MonitoringResult.state)
        .where(
            MonitoringResult.model_name == model_name,
            MonitoringResult.kind == "quality",
            MonitoringResult.metric == "degraded",
            MonitoringResult.state.in_(VERDICT_STATES),
        )
        .order_by(MonitoringResult.week.desc())
        .limit(1)
    ).scalar_one_or_none()
    gate_counts = {
        outcome: int(n)
        for outcome, n in conn.execute(
            select(GateDecisionRow.outcome, func.count())
            .where(GateDecisionRow.model_name == model_name)
            .group_by(GateDecisionRow.outcome)
        )
    }
    moved_rollbacks = (
        AliasAudit.model_name == model_name,
        AliasAudit.action == "rollback",
        AliasAudit.outcome == "moved",
    )
    rollback_counts = {
        actor: int(n)
        for actor, n in conn.execute(
            select(AliasAudit.actor, func.count())
            .where(*moved_rollbacks)
            .group_by(AliasAudit.actor)
        )
    }
    last_rollback = conn.execute(
        select(func.max(AliasAudit.moved_at)).where(*moved_rollbacks)
    ).scalar_one_or_none()
    champion = conn.execute(
        select(ChampionPointer.version).where(ChampionPointer.model_name == model_name)
    ).scalar_one_or_none()
    pipelines: dict[str, tuple[datetime | None, bool]] = {}
    last_success = dict(
        conn.execute(
            select(PipelineRun.dag_id, func.max(PipelineRun.finished_at))
            .where(PipelineRun.state == "success")
            .group_by(PipelineRun.dag_id)
        ).all()
    )
    newest_run = (
        select(PipelineRun.dag_id, func.max(PipelineRun.finished_at).label("finished_at"))
        .group_by(PipelineRun.dag_id)
        .subquery()
    )
    for dag_id, state in conn.execute(
        select(PipelineRun.dag_id, PipelineRun.state).join(
            newest_run,
            (newest_run.c.dag_id == PipelineRun.dag_id)
            & (newest_run.c.finished_at == PipelineRun.finished_at),
        )
    ):
        failed = pipelines.get(dag_id, (None, False))[1] or state == "failed"
        pipelines[dag_id] = (last_success.get(dag_id), failed)
    return StoreSnapshot(
        figures=figures,
        newest_week=date.fromisoformat(week) if week else None,
        guard_state=guard_state,
        guard_checks=_guard_checks(guard.report if guard is not None else None),
        quality_state=quality_state,
        gate_counts=gate_counts,
        rollback_counts=rollback_counts,
        last_rollback=_aware(last_rollback) if last_rollback is not None else None,
        champion_version=champion,
        pipelines=pipelines,
        model_name=model_name,
        feature_states=feature_states,
        feature_varies=feature_varies,
        schema_mismatch=schema,
        features=tuple(features),
    )


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        yield g


def _unix(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _guard_evidence(snap: StoreSnapshot) -> Iterator[Metric]:
    """``rollguard_guard_check_verdict`` and ``rollguard_guard_evidence`` of the newest check."""
    if not snap.guard_checks:
        return
    verdicts = GaugeMetricFamily(
        "rollguard_guard_check_verdict",
        "1 for the verdict of each check of the newest live-guard check, 0 for the others.",
        labels=["check", "verdict"],
    )
    evidence = GaugeMetricFamily(
        "rollguard_guard_evidence",
        "Evidence of each check of the newest live-guard check: n_rows and n_positives it read, "
        "its value (PSI, or the champion-minus-previous difference), threshold and the "
        "bootstrap interval (ci_low, ci_high) of the difference.",
        labels=["check", "figure"],
    )
    for check, (verdict, figures) in sorted(snap.guard_checks.items()):
        for v in GUARD_VERDICTS:
            verdicts.add_metric([check, v], 1.0 if v == verdict else 0.0)
        for figure, value in figures.items():
            evidence.add_metric([check, figure], value)
    yield verdicts
    yield evidence


def snapshot_metrics(snap: StoreSnapshot) -> Iterator[Metric]:
    """The metric families of one snapshot (everything but ``rollguard_exporter_store_up``).

    Names, labels and meanings are those of docs/metrics.md (the shared contract).
    """
    drift = snap.figures.get("data_drift", {})
    yield from _gauge(
        "rollguard_dataset_drift_share",
        "Share of feature columns that drifted in the newest monitored week (0..1, Evidently).",
        drift.get(("drift_share", "")),
    )
    score = GaugeMetricFamily(
        "rollguard_feature_drift_score",
        "Evidently drift score per feature, newest monitored week.",
        labels=["feature"],
    )
    drifted = GaugeMetricFamily(
        "rollguard_feature_drifted",
        "1 when the feature drifted in the newest monitored week, else 0.",
        labels=["feature"],
    )
    for (metric, feature), value in sorted(drift.items()):
        if feature and metric == "drift_score":
            score.add_metric([feature], value)
        elif feature and metric == "drifted":
            drifted.add_metric([feature], value)
    yield score
    yield drifted
    yield from _feature_state_metrics(snap)

    scores = snap.figures.get("score_drift", {})
    yield from _gauge(
        "rollguard_score_drift_psi",
        "PSI of the champion's scores this week against its gate-time scores.",
        scores.get(("psi", "")),
    )
    quantile = GaugeMetricFamily(
        "rollguard_score_quantile",
        "Quantiles of the champion's scores (probability) in the newest monitored week.",
        labels=["quantile"],
    )
    for label, metric in SCORE_QUANTILES.items():
        if (metric, "") in scores:
            quantile.add_metric([label], scores[(metric, "")])
    yield quantile

    yield from _quality_metrics(snap)
    yield from _kpi_metrics(snap)
    yield from _gauge(
        "rollguard_monitoring_week_timestamp_seconds",
        "Cutoff of the newest monitored week, unix seconds (00:00 UTC).",
        _unix(snap.newest_week) if snap.newest_week is not None else None,
    )

    guard = GaugeMetricFamily(
        "rollguard_guard_state",
        "1 for the state of the newest live-guard check, 0 for the others.",
        labels=["state"],
    )
    for state in GUARD_STATES:
        guard.add_metric([state], 1.0 if snap.guard_state == state else 0.0)
    yield guard
    yield from _guard_evidence(snap)

    gates = CounterMetricFamily(
        "rollguard_gate_decisions",
        "Gate decisions recorded in the store, by decision.",
        labels=["decision"],
    )
    for decision in sorted({*GATE_DECISIONS, *snap.gate_counts}):
        gates.add_metric([decision], snap.gate_counts.get(decision, 0))
    yield gates
    rollbacks = CounterMetricFamily(
        "rollguard_rollbacks",
        "Rollbacks that moved the champion alias, by actor (from the alias audit).",
        labels=["actor"],
    )
    for actor in sorted({*ROLLBACK_ACTORS, *snap.rollback_counts}):
        rollbacks.add_metric([actor], snap.rollback_counts.get(actor, 0))
    yield rollbacks
    yield from _gauge(
        "rollguard_last_rollback_timestamp_seconds",
        "Time of the newest rollback that moved the champion, unix seconds.",
        snap.last_rollback.timestamp() if snap.last_rollback is not None else None,
    )
    champion: float | None = None
    if snap.champion_version is not None:
        try:
            champion = float(int(snap.champion_version))
        except ValueError:
            log.warning("champion version %r is not numeric", snap.champion_version)
    yield from _gauge(
        "rollguard_champion_version",
        "Registered-model version that is champion per the store's champion pointer.",
        champion,
    )

    success = GaugeMetricFamily(
        "rollguard_pipeline_last_success_timestamp_seconds",
        "End of the newest successful run of the DAG, unix seconds.",
        labels=["dag_id"],
    )
    failed = GaugeMetricFamily(
        "rollguard_pipeline_last_run_failed",
        "1 when the newest run of the DAG failed, else 0.",
        labels=["dag_id"],
    )
    for dag_id, (last_ok, last_failed) in sorted(snap.pipelines.items()):
        if last_ok is not None:
            success.add_metric([dag_id], _aware(last_ok).timestamp())
        failed.add_metric([dag_id], 1.0 if last_failed else 0.0)
    yield success
    yield failed


def _feature_state_metrics(snap: StoreSnapshot) -> Iterator[Metric]:
    """Per feature of the use case: its state in the newest drift week (one series per state),
    whether it varied in every week of the reference, and the week's schema figure."""
    model = snap.model_name
    state = GaugeMetricFamily(
        "rollguard_feature_state",
        "1 for the feature's state in the newest monitored week (ok, drifted, skipped_constant, "
        "skipped_missing, schema_mismatch), 0 for the others; all 0 when the week has no row for "
        "it.",
        labels=["model", "feature", "state"],
    )
    varies = GaugeMetricFamily(
        "rollguard_feature_varies_weekly",
        "1 when the feature took at least two values in every week of the champion's training "
        "rows (the drift reference) of the newest monitored week, else 0.",
        labels=["model", "feature"],
    )
    for feature in snap.features:
        current = snap.feature_states.get(feature)
        for name in FEATURE_STATES:
            state.add_metric([model, feature, name], 1.0 if current == name else 0.0)
        if feature in snap.feature_varies:
            varies.add_metric([model, feature], snap.feature_varies[feature])
    yield state
    yield varies
    if snap.schema_mismatch is not None:
        schema = GaugeMetricFamily(
            "rollguard_data_schema_mismatch",
            "1 when the newest monitored week's rows or the reference lack a feature column or "
            "hold extra columns (the data_drift schema figure), else 0.",
            labels=["model"],
        )
        schema.add_metric([model], snap.schema_mismatch)
        yield schema


def _quality_metrics(snap: StoreSnapshot) -> Iterator[Metric]:
    """Live quality of the newest matured week, task-neutral: the metric is a label."""
    quality = snap.figures.get("quality", {})
    live = GaugeMetricFamily(
        "rollguard_live_quality",
        "Realized quality of the champion on matured labels, newest matured week, by metric "
        "(average_precision, roc_auc, brier, precision_at_budget; mae, rmse, bias in the label's "
        "unit).",
        labels=["metric"],
    )
    expected = GaugeMetricFamily(
        "rollguard_expected_quality",
        "The champion's gate-time figure of the metric (its training run's eval_<metric>).",
        labels=["metric"],
    )
    interval = GaugeMetricFamily(
        "rollguard_live_quality_ci",
        "Bootstrap interval bound of the judged live metric (roc_auc or mae).",
        labels=["metric", "bound"],
    )
    for metric in LIVE_QUALITY:
        if (metric, "") in quality:
            live.add_metric([metric], quality[(metric, "")])
        if (f"expected_{metric}", "") in quality:
            expected.add_metric([metric], quality[(f"expected_{metric}", "")])
    for metric in JUDGED:
        for bound in ("low", "high"):
            if (f"{metric}_ci_{bound}", "") in quality:
                interval.add_metric([metric, bound], quality[(f"{metric}_ci_{bound}", "")])
    yield live
    yield expected
    yield interval
    # Regression weeks carry MAE figures; every other quality week is judged on ROC AUC.
    regression = any(metric.startswith(("mae", "expected_mae")) for metric, _ in quality)
    judged = "mae" if regression else "roc_auc"
    if ("degraded", "") in quality:
        degraded = GaugeMetricFamily(
            "rollguard_live_quality_degraded",
            "1 when the live interval of the judged metric is worse than the gate-time figure by "
            "more than the policy margin (newest matured week with a verdict), else 0.",
            labels=["metric"],
        )
        degraded.add_metric([judged], quality[("degraded", "")])
        yield degraded
    state = GaugeMetricFamily(
        "rollguard_live_quality_state",
        "1 for the state of the newest live-quality verdict (ok, degraded, inconclusive = too "
        "little evidence), 0 for the others.",
        labels=["state"],
    )
    for name in VERDICT_STATES:
        state.add_metric([name], 1.0 if snap.quality_state == name else 0.0)
    yield state


def _kpi_metrics(snap: StoreSnapshot) -> Iterator[Metric]:
    kpis = snap.figures.get("kpi", {})
    kpi = GaugeMetricFamily(
        "rollguard_business_kpi",
        "Business KPIs of the newest week with a known outcome: the model against a random pick "
        "of the same budget (classification) or against the declared baselines (regression).",
        labels=["kpi", "targeting"],
    )
    for (metric, feature), value in sorted(kpis.items()):
        if feature and metric in BASELINE_KPIS:
            kpi.add_metric([BASELINE_KPIS[metric], feature], value)
        elif not feature:
            for labels in KPI_METRICS.get(metric, ()):
                kpi.add_metric(list(labels), value)
    yield kpi
    yield from _gauge(
        "rollguard_base_rate",
        "Share of all scored rows with a positive label (binary classification), newest week "
        "with a known outcome.",
        kpis.get(("base_rate", "")),
    )


class StoreCollector(Collector):
    """Reads the monitoring store on each ``collect()`` (i.e. each scrape) for one model.

    Args:
        engine: returns the store's engine; called on every scrape until it succeeds once (so a
            store that is down when the service starts is picked up later). An exception from it
            counts as an unreadable store.
        model_name: the registered model whose figures are exported.
        features: the use case's feature names (bound of ``rollguard_feature_state``); None: the
            features of the store's newest drift week.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        model_name: str,
        features: Sequence[str] | None = None,
    ) -> None:
        self._engine_factory = engine
        self._engine: Engine | None = None
        self.model_name = model_name
        self.features = tuple(features) if features is not None else None

    def describe(self) -> Iterable[Metric]:
        """No fixed description: the registry must not call ``collect()`` (a query) on register."""
        return []

    def collect(self) -> Iterable[Metric]:
        """All metric families; on a store error only ``rollguard_exporter_store_up 0``."""
        try:
            if self._engine is None:
                self._engine = self._engine_factory()
            with self._engine.connect() as conn:
                snap = read_snapshot(conn, self.model_name, self.features)
            families = list(snapshot_metrics(snap))
            up = 1.0
        except Exception as exc:  # noqa: BLE001 - any failure to read is "store down"
            log.warning("monitoring store not readable: %s: %s", type(exc).__name__, exc)
            families, up = [], 0.0
        yield from families
        yield from _gauge(
            "rollguard_exporter_store_up",
            "1 when the monitoring store could be read on this scrape, else 0.",
            up,
        )


def store_registry(
    engine: Callable[[], Engine], model_name: str, features: Sequence[str] | None = None
) -> CollectorRegistry:
    """A fresh :class:`CollectorRegistry` holding only a :class:`StoreCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine, model_name, features))
    return registry
