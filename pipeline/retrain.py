"""The training job: gather inputs, decide tune-or-reuse, train, track in MLflow, register the
challenger. Idempotent: a second call for the same data, parameters and code returns the version
the first one registered and trains nothing, also when both run at once (the lookup, training and
registration run under the store lock on the model name and training key, :mod:`rollguard.locks`).

This is wiring; the decisions and computations live in :mod:`domain.evaluation` (cutoffs and
rows), :mod:`pipeline.training`, :mod:`pipeline.tuning` and :mod:`pipeline.tracking`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.evaluation import (
    CutoffPlan,
    TrainingInputs,
    TrainingSet,
    build_training_set,
    load_training_inputs,
    plan_cutoffs,
)
from monitoring.weekly import TRAINING_MEDIAN_TAG
from pipeline import tracking, training, tuning
from rollguard.locks import store_lock
from rollguard.weeks import horizon_weeks, iso_week_label

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rollguard.settings import Settings


@dataclass(frozen=True)
class TrainingOutcome:
    """What ``rollguard train`` reports."""

    run_id: str
    model_name: str
    version: str
    created: bool  # False when an identical earlier run was found (nothing trained)
    training_key: str
    metrics: dict[str, float]
    decision: tuning.TuneDecision
    tuning: tuning.TuningResult | None
    cutoffs: dict[str, Any]
    shap: dict[str, str]
    seconds: float


def retrain(
    settings: Settings,
    *,
    cutoff: date | None = None,
    mode: tuning.Mode = "auto",
    guard_degraded: bool = False,
    client: MlflowClient | None = None,
    inputs: TrainingInputs | None = None,
) -> TrainingOutcome:
    """Train (or find) the challenger for the current data.

    At most one version per training key, whatever the concurrency: the lookup of the key and,
    when no version carries it, the training and registration run under the store's lock on
    ``("training", model name, key)`` (:func:`rollguard.locks.store_lock`). A process that finds
    the lock taken waits, then finds the holder's version and returns it (``created=False``).

    Args:
        settings: the one settings object (cutoff counts, budgets, thresholds, URIs).
        cutoff: evaluation cutoff (a Monday with a matured label); default the newest one.
        mode: ``auto`` applies :func:`pipeline.tuning.decide_tuning`; ``tune``/``reuse`` force it.
        guard_degraded: the live guard reported a degraded champion (forces tuning in ``auto``).
        client: MLflow client (tracking and registry on ``settings.tracking_uri``); default one.
        inputs: the data; default read from the warehouse.

    Raises:
        domain.evaluation.TrainingDataError: not enough matured history.
        rollguard.errors.ConfigurationError: ``--reuse`` without stored parameters.
        rollguard.locks.LockTimeoutError: another training of the same key held the lock for
            longer than ``settings.training_lock_timeout_seconds``.
        pipeline.tracking.TrackingError: the registered version lost its signature.
    """
    start = time.perf_counter()
    inputs = inputs or load_training_inputs(settings)
    client = client or tracking.settings_client(settings)
    job = _prepare(settings, inputs, client, cutoff, mode, guard_degraded)
    name = settings.model_name
    with store_lock(
        settings.monitoring_db_url,
        ("training", name, job.key),
        timeout_seconds=settings.training_lock_timeout_seconds,
        description=f"training of key {job.key} of model {name}",
    ):
        existing = tracking.find_version(name, job.key, client=client)
        if existing is None:
            return _train_and_register(settings, job, client, start)
    run = client.get_run(existing.run_id)
    return TrainingOutcome(
        run_id=existing.run_id,
        model_name=name,
        version=str(existing.version),
        created=False,
        training_key=job.key,
        metrics={k: v for k, v in run.data.metrics.items() if k.startswith("eval_")},
        decision=job.decision,
        tuning=job.study,
        cutoffs=job.plan.as_dict(),
        shap={k: v for k, v in run.data.tags.items() if k.startswith("rollguard.shap.")},
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _Job:
    """What one training would train: its data, parameters and the key they give."""

    plan: CutoffPlan
    data: TrainingSet
    batches: dict[str, str]
    identity: dict[str, Any]
    decision: tuning.TuneDecision
    study: tuning.TuningResult | None
    config: training.TrainingConfig
    found_cutoff: date
    code: str
    key: str


def _prepare(
    settings: Settings,
    inputs: TrainingInputs,
    client: MlflowClient,
    cutoff: date | None,
    mode: tuning.Mode,
    guard_degraded: bool,
) -> _Job:
    """Plan the cutoffs, build the rows, decide tune-or-reuse (tuning if so) and compute the
    training key. Nothing is written to the registry here."""
    usecase = settings.usecase_spec
    plan = plan_cutoffs(
        usecase,
        inputs.weeks,
        n_fit=settings.training_cutoffs,
        n_validation=settings.validation_cutoffs,
        horizon_days=settings.horizon_days,
        evaluation_cutoff=cutoff,
    )
    data = build_training_set(usecase, inputs.records, plan)
    batches = _batches_used(inputs, plan)
    identity = {
        "batches_sha256": hashlib.sha256(tracking.canonical_json(batches).encode()).hexdigest(),
        "cutoffs": plan.as_dict(),
        "dataset_sha256": data.dataset_sha256,
    }
    decision = _decide_tuning(settings, inputs, client, plan, data, mode, guard_degraded)
    study: tuning.TuningResult | None = None
    if decision.action == "tune":
        study = tuning.tune(
            usecase,
            data,
            training.TrainingConfig.from_settings(settings),
            storage_url=settings.optuna_url,
            study_name=f"rollguard-{hashlib.sha256(tracking.canonical_json(identity).encode()).hexdigest()[:16]}",
            n_trials=settings.tuning_trials,
            timeout_seconds=settings.tuning_timeout_seconds,
            seed=settings.seed,
        )
        tunable, found_cutoff = dict(study.params), plan.evaluation
    else:
        assert decision.stored is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
        tunable, found_cutoff = dict(decision.stored.params), decision.stored.found_cutoff
    config = training.TrainingConfig.from_settings(settings, tunable)
    key_params = {
        **config.booster_params(usecase.task),
        "num_boost_round": config.num_boost_round,
        "early_stopping_rounds": config.early_stopping_rounds,
    }
    code = tracking.code_version()
    key = tracking.training_key(identity, key_params, code)
    return _Job(plan, data, batches, identity, decision, study, config, found_cutoff, code, key)


def _decide_tuning(
    settings: Settings,
    inputs: TrainingInputs,
    client: MlflowClient,
    plan: CutoffPlan,
    data: TrainingSet,
    mode: tuning.Mode,
    guard_degraded: bool,
) -> tuning.TuneDecision:
    """:func:`pipeline.tuning.decide_tuning` on the stored parameters and, when they could be
    reused, the feature drift since they were found."""
    usecase = settings.usecase_spec
    stored = tuning.load_stored_params(settings.model_name, client=client)
    drift = None
    if (
        stored is not None
        and mode == "auto"
        and not guard_degraded
        and ((plan.evaluation - stored.found_cutoff).days <= settings.params_max_age_days)
    ):
        reference = usecase.build_rows(inputs.records, stored.found_cutoff, label_available=False)
        drift = tuning.feature_drift(
            usecase,
            reference,
            data.evaluation,
            threshold=settings.drift_threshold,
            sample_rows=settings.monitor_sample_rows,
            seed=settings.monitor_sample_seed,
        )
    return tuning.decide_tuning(
        stored,
        evaluation_cutoff=plan.evaluation,
        drift_share=drift.share if drift else None,
        drift_threshold=settings.drift_threshold,
        guard_degraded=guard_degraded,
        max_age_days=settings.params_max_age_days,
        mode=mode,
    )


def _train_and_register(
    settings: Settings, job: _Job, client: MlflowClient, start: float
) -> TrainingOutcome:
    """Train, log the MLflow run (lineage, metrics, SHAP, model) and register the version with
    status ``candidate`` and alias ``challenger``. Called with the training key's lock held."""
    usecase = settings.usecase_spec
    tracking_uri = client.tracking_uri
    model = training.train_model(usecase, job.data, job.config)
    metrics = training.evaluate_model(usecase, model, job.data, budget=settings.targeting_budget)
    lineage = _lineage(usecase.name, job, metrics)
    experiment_id = tracking.ensure_experiment(
        client, tracking_uri=tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    run = client.create_run(
        experiment_id, run_name=f"train-{job.plan.evaluation.isoformat()}", tags=lineage
    )
    run_id = run.info.run_id
    try:
        _log_run(
            client, run_id, job.config, model, metrics, job.data, job.batches, lineage, settings
        )
        shap_tags = _log_shap(client, run_id, model, job.data, settings)
        model_uri = tracking.log_model(
            usecase,
            model.booster,
            job.data.evaluation.head(50),
            run_id=run_id,
            tracking_uri=tracking_uri,
        )
        version = tracking.register_version(
            model_uri,
            model_name=settings.model_name,
            run_id=run_id,
            client=client,
            tracking_uri=tracking_uri,
            tags={
                **lineage,
                **shap_tags,
                **tracking.training_profile_tags(usecase, (job.data.fit, job.data.validation)),
                tracking.STATUS_TAG: "candidate",
            },
        )
        client.set_tag(run_id, "rollguard.model_version", str(version.version))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return TrainingOutcome(
        run_id=run_id,
        model_name=settings.model_name,
        version=str(version.version),
        created=True,
        training_key=job.key,
        metrics=metrics.as_metrics(),
        decision=job.decision,
        tuning=job.study,
        cutoffs=job.plan.as_dict(),
        shap=shap_tags,
        seconds=time.perf_counter() - start,
    )


def _lineage(usecase_name: str, job: _Job, metrics: training.EvaluationMetrics) -> dict[str, str]:
    """The tags of the run and the version: key, code, data, cutoffs, batches, parameters' origin."""
    plan = job.plan
    lineage = {
        tracking.TRAINING_KEY_TAG: job.key,
        "rollguard.code_version": job.code,
        "rollguard.dataset_sha256": job.data.dataset_sha256,
        "rollguard.usecase": usecase_name,
        "rollguard.cutoff.evaluation": plan.evaluation.isoformat(),
        "rollguard.cutoff.evaluation_pool": ",".join(c.isoformat() for c in plan.evaluations),
        "rollguard.cutoff.validation": ",".join(c.isoformat() for c in plan.validation),
        "rollguard.cutoff.fit": ",".join(c.isoformat() for c in plan.fit),
        "rollguard.batches.count": str(len(job.batches)),
        "rollguard.batches.sha256": job.identity["batches_sha256"],
        tuning.PARAMS_FOUND_CUTOFF_TAG: job.found_cutoff.isoformat(),
        **job.decision.as_tags(),
    }
    if metrics.training_median is not None:  # regression: the constant baseline of gate and KPIs
        lineage[TRAINING_MEDIAN_TAG] = f"{metrics.training_median:.6g}"
    batches_json = json.dumps(job.batches, sort_keys=True)
    if len(batches_json) <= 5000:  # MLflow tag values are bounded; the artifact has them all
        lineage["rollguard.batches"] = batches_json
    if job.study is not None:
        lineage["rollguard.optuna.study"] = job.study.study_name
        lineage["rollguard.optuna.trial"] = str(job.study.best_trial)
    elif job.decision.stored is not None:
        lineage["rollguard.params_source_run"] = job.decision.stored.run_id
    return lineage


def _log_run(
    client: MlflowClient,
    run_id: str,
    config: training.TrainingConfig,
    model: training.TrainedModel,
    metrics: training.EvaluationMetrics,
    data: TrainingSet,
    batches: Mapping[str, str],
    lineage: Mapping[str, str],
    settings: Settings,
) -> None:
    from mlflow.entities import Param

    task = settings.usecase_spec.task
    params = {f"{tuning.PARAM_PREFIX}{k}": v for k, v in config.booster_params(task).items()}
    params.update(
        {
            "num_boost_round": config.num_boost_round,
            "early_stopping_rounds": config.early_stopping_rounds,
            "best_iteration": model.best_iteration,
            "n_rounds": model.n_rounds,
            "targeting_budget": settings.targeting_budget,
            "horizon_days": settings.horizon_days,
            "n_fit_rows": len(data.fit),
            "n_validation_rows": len(data.validation),
            "n_evaluation_rows": len(data.evaluation),
        }
    )
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    values = {
        **metrics.as_metrics(),
        f"validation_{model.validation_metric}": model.validation_score,
    }
    client.log_batch(run_id, metrics=[tracking._metric(k, v) for k, v in values.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lineage.json"
        path.write_text(
            json.dumps(
                {"tags": dict(lineage), "batches": dict(batches), "cutoffs": data.plan.as_dict()},
                indent=1,
            )
        )
        client.log_artifact(run_id, str(path))


def _log_shap(
    client: MlflowClient,
    run_id: str,
    model: training.TrainedModel,
    data: TrainingSet,
    settings: Settings,
) -> dict[str, str]:
    """Explain a seeded sample of evaluation rows. A failure is recorded, never fatal: the model is
    still valid without its explanation, and the run says why it has none."""
    try:
        rows = tracking.sample_rows(data.evaluation, settings.shap_sample_rows, settings.seed)
        expl = tracking.explain(settings.usecase_spec, model.booster, rows)
        tracking.log_explanation(expl, run_id=run_id, client=client)
        tags = {
            "rollguard.shap.status": "ok",
            "rollguard.shap.method": expl.method,
            "rollguard.shap.max_additivity_error": f"{expl.max_additivity_error:.3g}",
        }
        if expl.fallback_reason:
            tags["rollguard.shap.fallback_reason"] = expl.fallback_reason
    except Exception as exc:  # noqa: BLE001 - by decision: record and continue
        tags = {
            "rollguard.shap.status": "failed",
            "rollguard.shap.error": f"{type(exc).__name__}: {exc}"[:4000],
        }
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
    return tags


def _batches_used(inputs: TrainingInputs, plan: CutoffPlan) -> dict[str, str]:
    """``{batch_id: sha256}`` of the accepted batches up to the last week the plan's rows and labels
    can read (the week before the newest evaluation cutoff, or the horizon's last week)."""
    weeks = horizon_weeks(plan.evaluation, plan.horizon_days) or [
        iso_week_label(plan.evaluation - timedelta(days=7))
    ]
    last_week = weeks[-1]
    return {b: sha for b, (week, sha) in sorted(inputs.batches.items()) if week <= last_week}
