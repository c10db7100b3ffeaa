"""The pipeline's steps as plain functions of the settings: what the Airflow tasks call.

Each step is idempotent (keyed on the landing files' content and on the cutoff) and returns a small
JSON-ready dict of ids, paths and counts — never data — so that XCom stays small.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Mapping
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import lineage
from domain.evaluation import TrainingDataError, evaluation_rows, plan_cutoffs
from domain.scoring import score_batch
from domain.snapshots import build_snapshot
from domain.warehouse import ingested_weeks
from monitoring.compute import LiveQualityRule
from monitoring.results import record_pipeline_run
from monitoring.weekly import monitor_step as run_monitoring
from monitoring.weekly import open_inputs
from pipeline.decisions import decide_retrain
from pipeline.ingest import ingest_landing
from pipeline.retrain import retrain
from registry_guard.guard import check_champion, latest_guard_state
from registry_guard.policy import load_guard_policy, load_policy
from registry_guard.registry import DECISION_TAG, load_version, read_pointer, run_gate
from rollguard.db.models import IngestionDecision
from rollguard.files import sha256_file, write_atomic
from rollguard.logs import bind_context, unbind_context
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.weeks import parse_iso_week

log = logging.getLogger(__name__)

#: Fields a task binds to its logging context (docs/logs.md, "Fields").
TASK_FIELDS = ("dag_id", "dag_run_id", "task", "usecase")


def bind_task(context: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """Bind the Airflow task's identity to its logging context, so that every line logged while
    the task runs (by any logger) carries ``dag_id``, ``dag_run_id``, ``task`` and ``usecase``;
    forgets a ``model_version`` an earlier task of the same process bound. ``context`` is the
    task's Airflow context (``dag_run``, ``ti`` or ``task_instance``). Returns the fields bound.
    The DAGs' tasks call it once, through :func:`task_settings` (docs/logs.md, "Airflow tasks")."""
    run = context["dag_run"]
    ti = context.get("ti") or context.get("task_instance")
    fields = {
        "dag_id": str(run.dag_id),
        "dag_run_id": str(run.run_id),
        "task": str(getattr(ti, "task_id", "unknown")),
        "usecase": settings.usecase,
    }
    unbind_context("model_version")
    bind_context(**fields)
    return fields


def task_settings(context: Mapping[str, Any], mlflow_user: str | None = None) -> Settings:
    """What every DAG task calls first: the settings from the environment (as MLflow user
    ``mlflow_user`` when given, :meth:`Settings.as_mlflow_user`), with the task bound to its
    log lines (:func:`bind_task`)."""
    settings = Settings()
    bind_task(context, settings)
    return settings if mlflow_user is None else settings.as_mlflow_user(mlflow_user)


def detect_new_files(settings: Settings) -> list[str]:
    """Names of landing files whose (name, content) pair has no ingestion decision yet."""

    if not settings.landing_dir.exists():
        return []
    engine = open_store(settings)
    with Session(engine) as session:
        known = set(
            session.execute(
                select(IngestionDecision.file_name, IngestionDecision.content_sha256)
            ).all()
        )
    engine.dispose()
    new = []
    for path in sorted(settings.landing_dir.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            regular = stat.S_ISREG(path.lstat().st_mode)
        except FileNotFoundError:
            continue
        # A link, folder or FIFO is never read; ingestion moves it to quarantine, so while it is
        # here it still needs a decision.
        if not regular or (path.name, sha256_file(path)) not in known:
            new.append(path.name)
    return new


def ingest_step(settings: Settings) -> dict[str, Any]:
    """Ingest the landing zone; returns counts, accepted batch ids and quarantine reasons."""

    report = ingest_landing(settings)
    return {
        "accepted": [o.batch_id for o in report.accepted],
        "accepted_weeks": [o.week for o in report.accepted],
        "rows_accepted": sum(o.n_rows or 0 for o in report.accepted),
        "quarantined": {o.file: o.reason_code for o in report.quarantined},
        "duplicates": [o.file for o in report.duplicates],
    }


def scoring_cutoff(settings: Settings) -> date | None:
    """The cutoff for this week's production scoring: the Monday after the newest ingested week."""

    weeks = ingested_weeks(settings)
    if not weeks:
        return None
    return parse_iso_week(weeks[-1]) + timedelta(days=7)


def features_step(settings: Settings, cutoff: date | None = None) -> dict[str, Any]:
    """Build the snapshot at ``cutoff`` (default: the scoring cutoff); returns its path, size and
    label state."""

    cutoff = cutoff or scoring_cutoff(settings)
    if cutoff is None:
        return {"cutoff": None}
    result = build_snapshot(settings, cutoff)
    return {
        "cutoff": result.cutoff,
        "path": result.path,
        "n_rows": result.n_rows,
        "missing_weeks": result.missing_weeks,
    }


# --- the model side of a weekly run ----------------------------------------------------------------
def _champion(settings: Settings) -> tuple[Any, Any, str | None]:
    """``(client, engine, champion version or None)``."""

    client, engine = mlflow_client(settings), open_store(settings)
    return client, engine, read_pointer(engine, settings.model_name)


def _version_tag(client: Any, settings: Settings, version: str, tag: str) -> str | None:
    return (client.get_model_version(settings.model_name, version).tags or {}).get(tag)


def score_step(settings: Settings, features: dict[str, Any]) -> dict[str, Any]:
    """The champion scores every row of this week's snapshot (production predictions)."""

    if not features.get("path"):
        return {"scored": False, "reason": "no features this week"}
    client, engine, champion = _champion(settings)
    if champion is None:
        return {"scored": False, "reason": "no champion yet"}
    bind_context(model_version=champion)
    model = load_version(client, settings.model_name, champion, alias="champion")
    cutoff = date.fromisoformat(features["cutoff"])
    result = score_batch(
        settings,
        cutoff,
        model_version=champion,
        predict=model.predict,
        features=pd.read_parquet(features["path"]),
        batch_ids=lineage.recorded(engine, lineage.SNAPSHOT, cutoff),
        engine=engine,
    )
    return {"scored": True, **result.__dict__}


def live_quality_rule(settings: Settings) -> LiveQualityRule:
    """The monitoring's live-quality rule (:class:`monitoring.compute.LiveQualityRule`) of the
    configured gate and guard policies, for the use case's task type."""
    path = settings.gate_policy_path
    return LiveQualityRule.from_policies(
        load_policy(path), load_guard_policy(path), settings.usecase_spec.task
    )


def model_loader(settings: Settings) -> Any:
    """``load(version)``: a registered version of the configured model, loaded from the registry
    (what monitoring needs to re-score gate-time rows)."""
    client = mlflow_client(settings)
    return lambda version: load_version(client, settings.model_name, version)


def monitor_step(settings: Settings, features: dict[str, Any]) -> dict[str, Any]:
    """This week's monitoring (:func:`monitoring.weekly.monitor_step`): data and score drift of
    the scoring cutoff against the champion's training data and gate-time scores, realized quality
    and business KPIs of the cutoff whose label matured this week; rows go to
    ``monitoring_results``, HTML reports to ``reports/monitoring/``."""
    inputs = open_inputs(
        settings, rule=live_quality_rule(settings), load_model=model_loader(settings)
    )
    return run_monitoring(settings, features, inputs=inputs)


def decide_step(
    settings: Settings, drift: dict[str, Any], *, force: bool = False
) -> dict[str, Any]:
    """Whether this run needs a new challenger (:func:`pipeline.decisions.decide_retrain`);
    ``drift`` is the monitor step's summary, whose ``retrain_drift_share`` (features drifted since
    the champion's evaluation cutoff) is the rule's drift input."""

    client, engine, champion = _champion(settings)
    age = None
    if champion is not None:
        tag = _version_tag(client, settings, champion, "rollguard.cutoff.evaluation")
        try:
            now = plan_cutoffs(
                settings.usecase_spec,
                ingested_weeks(settings),
                n_fit=0,
                n_validation=0,
                horizon_days=settings.horizon_days,
            ).evaluation
        except TrainingDataError:
            now = None
        if tag and now:
            age = (now - date.fromisoformat(tag)).days // 7
    decision = decide_retrain(
        has_champion=champion is not None,
        forced=force,
        guard_state=latest_guard_state(engine, settings.model_name),
        champion_age_weeks=age,
        max_champion_age_weeks=settings.max_champion_age_weeks,
        drift_share=drift.get("retrain_drift_share"),
        drift_threshold=settings.retrain_drift_threshold,
        drift_exceeded=drift.get("retrain_drift_exceeded"),
    )
    return asdict(decision)


def train_step(settings: Settings, decision: dict[str, Any]) -> dict[str, Any]:
    """Train (or find) the challenger when the decision says so."""

    if not decision["retrain"]:
        return {"trained": False, "reason": decision["reason"]}
    try:
        outcome = retrain(settings, guard_degraded=decision["reason"] == "guard_degraded")
    except TrainingDataError as exc:
        return {"trained": False, "reason": "not_enough_history", "detail": str(exc)}
    bind_context(model_version=outcome.version)
    log.info(
        "challenger %s version %s %s (tuning: %s)",
        settings.model_name,
        outcome.version,
        "trained" if outcome.created else "found by its training key",
        outcome.decision.action,
    )
    return {
        "trained": True,
        "version": outcome.version,
        "created": outcome.created,
        "run_id": outcome.run_id,
        "tuning": outcome.decision.action,
        "tuning_reason": outcome.decision.reason,
        "tuning_detail": outcome.decision.detail,
        "evaluation_cutoff": outcome.cutoffs["evaluation"],
        "metrics": {k: round(v, 6) for k, v in outcome.metrics.items()},
    }


def gate_step(settings: Settings, trained: dict[str, Any]) -> dict[str, Any]:
    """Gate the new challenger against the champion and apply the decision (once per version)."""

    if not trained.get("trained"):
        return {"gated": False, "reason": trained.get("reason")}
    client, engine, champion = _champion(settings)
    version = trained["version"]
    bind_context(model_version=version)
    earlier = _version_tag(client, settings, version, DECISION_TAG)
    if earlier is not None or version == champion:
        return {"gated": False, "version": version, "reason": f"already gated ({earlier})"}
    run = run_gate(
        evaluation_rows(settings).rows,
        model_name=settings.model_name,
        policy=load_policy(settings.gate_policy_path),
        client=client,
        engine=engine,
        usecase=settings.usecase_spec,
        budget=settings.targeting_budget,
        version=version,
        actor="pipeline",
    )
    primary = next((c for c in run.decision.checks if c.name == "primary_non_inferiority"), None)
    log.info(
        "gate of %s version %s against champion %s: %s (%s)",
        settings.model_name,
        version,
        run.champion_version,
        run.decision.outcome,
        run.decision.reason_code,
    )
    return {
        "gated": True,
        "version": version,
        "champion_before": run.champion_version,
        "outcome": run.decision.outcome,
        "reason_code": run.decision.reason_code,
        "reasons": list(run.decision.reasons)[:3],
        "primary_metric": "average_precision" if settings.usecase_spec.is_classification else "mae",
        "challenger_primary": None if primary is None else primary.challenger,
        "champion_primary": None if primary is None else primary.champion,
        "primary_diff_ci": None if primary is None else [primary.ci_low, primary.ci_high],
        "moved": run.move is not None,
    }


def guard_step(settings: Settings) -> dict[str, Any]:
    """The live guard's check of the champion (rolls back on degradation)."""

    client, engine, champion = _champion(settings)
    if champion is None:
        return {"state": None, "reason": "no champion"}
    bind_context(model_version=champion)
    result = check_champion(settings, client=client, engine=engine)
    log.info(
        "guard check of champion %s version %s: %s%s",
        settings.model_name,
        result.champion_version,
        result.state,
        "" if result.rollback is None else f", rolled back to version {result.rollback.to_version}",
    )
    return {
        "state": result.state,
        "champion": result.champion_version,
        "reason": result.reason,
        "rolled_back_to": None
        if result.rollback is None or result.rollback.replayed
        else result.rollback.to_version,
        "rollback_refused": result.rollback_refused,
    }


def report_step(
    settings: Settings,
    run_key: str,
    parts: dict[str, Any],
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
    started_at: Any = None,
) -> dict[str, Any]:
    """Write the run's summary to ``reports/runs/<run_key>.json`` and return its path; with
    ``dag_id`` and ``run_id``, also the run's ``pipeline_runs`` row (state ``success``)."""

    _, engine, champion = _champion(settings)
    body = {"run": run_key, "champion_after": champion, **parts}
    path = settings.reports_dir / "runs" / f"{run_key}.json"
    write_atomic(path, json.dumps(body, indent=2, default=str).encode("utf-8"))
    if dag_id and run_id:
        _record_run(
            settings,
            engine,
            dag_id,
            run_id,
            "success",
            started_at,
            {"report": str(path), "champion_after": champion},
        )
    return {"path": str(path), "champion_after": champion}


def _record_run(
    settings: Settings,
    engine: Any,
    dag_id: str,
    run_id: str,
    state: str,
    started_at: Any,
    detail: dict[str, Any],
) -> None:

    weeks = ingested_weeks(settings, engine=engine)
    record_pipeline_run(
        engine,
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        week=weeks[-1] if weeks else None,
        started_at=started_at,
        detail=detail,
    )


def run_failed_step(
    settings: Settings, dag_id: str, run_id: str, started_at: Any, failed_task: str, error: str
) -> None:
    """The failure callback's step: the run's ``pipeline_runs`` row with state ``failed``, naming
    the task that failed and its error (first 500 characters)."""

    engine = open_store(settings)
    try:
        _record_run(
            settings,
            engine,
            dag_id,
            run_id,
            "failed",
            started_at,
            {"failed_task": failed_task, "error": error[:500]},
        )
    finally:
        engine.dispose()
