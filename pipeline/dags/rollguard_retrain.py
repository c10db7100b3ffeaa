"""DAG ``rollguard_retrain``: the weekly loop of Rollguard (see docs/pipeline.md).

detect new batches (short-circuit when none) → ingest → backfill (rebuild the snapshots,
predictions and monitoring rows a late week made stale; ``pipeline.backfill``) → build features → batch scoring with the
champion (this week's production predictions) → in parallel: guard check of the champion on those
predictions (rolls a degraded champion back at once) and monitoring (data and score drift against
the champion's training data and gate-time scores, realized quality and business KPIs of the labels
that matured; rows in ``monitoring_results``, see docs/monitoring.md) → decide whether a new
challenger is needed → train (tune or reuse) → gate (applies the decision) → report (writes the
run's ``pipeline_runs`` row, state ``success``). A task that fails for good writes the row with
state ``failed`` (``on_failure_callback``).

The guard runs before any retraining, on the predictions the champion has just made: a broken
champion is rolled back within the run that first sees it, not after a retrain that might replace
it without anyone learning that it was broken.

A thin file: every task gathers its inputs, calls one step of :mod:`pipeline.steps` and returns
ids, paths and counts (XCom stays small). Heavy imports live inside the task bodies. Every step is
idempotent, keyed on the landing files' content, the cutoff and the training key, so a retried or
restarted run changes nothing twice. Runs every Monday at 06:00 UTC, when ``rollguard_landing_watch``
announces new landing files (an event on the ``rollguard_landing`` asset), and whenever it is
triggered (the embedded main job, ``rollguard demo``, triggers one run per delivered week).

Run configuration: ``{"force_retrain": true}`` asks for a new challenger whatever the evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from pipeline.assets import LANDING


def _record_failure(context: dict) -> None:  # type: ignore[type-arg]
    """Failure callback: the run's ``pipeline_runs`` row, state ``failed``, naming the task."""
    from pipeline.steps import run_failed_step

    run = context["dag_run"]
    ti = context.get("task_instance")
    run_failed_step(
        _settings(context=context),
        run.dag_id,
        run.run_id,
        getattr(run, "start_date", None),
        getattr(ti, "task_id", "unknown"),
        repr(context.get("exception")),
    )


DEFAULT_ARGS = {
    "on_failure_callback": _record_failure,
    "retries": 3,
    "retry_delay": timedelta(seconds=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=60),
}


def _settings(mlflow_user: str | None = None, context: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    """The settings from the environment; for the gate and guard_check tasks, with MLflow identity
    ``gate``/``guard`` when their password files are configured (the only identities that may
    move ``champion``; see docs/security.md, "Registry access control"). Every task calls it
    first, so it also binds the task's run id, task id and use case to the task's log lines
    (docs/logs.md, "Airflow tasks")."""
    from pipeline.steps import task_settings

    return task_settings(context if context is not None else get_current_context(), mlflow_user)


@dag(
    dag_id="rollguard_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * 1", timezone="UTC"), assets=[LANDING]
    ),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["rollguard"],
    doc_md=__doc__,
)
def rollguard_retrain() -> None:
    @task.short_circuit
    def detect_new_batches() -> bool:
        from pipeline.steps import detect_new_files

        return bool(detect_new_files(_settings()))

    @task
    def ingest() -> dict:
        from pipeline.steps import ingest_step

        return ingest_step(_settings())

    @task
    def backfill(_ingested: dict) -> dict:
        from pipeline.backfill import backfill_step

        return backfill_step(_settings())

    @task
    def build_features(_backfilled: dict) -> dict:
        from pipeline.steps import features_step

        return features_step(_settings())

    @task
    def score_batch(features: dict) -> dict:
        from pipeline.steps import score_step

        return score_step(_settings(), features)

    @task
    def monitor(features: dict, _scored: dict) -> dict:
        from pipeline.steps import monitor_step

        return monitor_step(_settings(), features)

    @task
    def guard_check(_scored: dict) -> dict:
        from pipeline.steps import guard_step

        return guard_step(_settings("guard"))

    @task
    def decide_retrain(monitored: dict, _guarded: dict) -> dict:
        from pipeline.steps import decide_step

        conf = get_current_context()["dag_run"].conf or {}
        return decide_step(_settings(), monitored, force=bool(conf.get("force_retrain", False)))

    @task
    def train(decision: dict) -> dict:
        from pipeline.steps import train_step

        return train_step(_settings(), decision)

    @task
    def gate(trained: dict) -> dict:
        from pipeline.steps import gate_step

        return gate_step(_settings("gate"), trained)

    @task
    def report(
        ingested: dict,
        backfilled: dict,
        features: dict,
        scored: dict,
        monitored: dict,
        decision: dict,
        trained: dict,
        gated: dict,
        guarded: dict,
    ) -> dict:
        from pipeline.steps import report_step

        run = get_current_context()["dag_run"]
        return report_step(
            _settings(),
            run.run_id.replace(":", "-").replace("+", "_"),
            {
                "ingest": ingested,
                "backfill": backfilled,
                "features": features,
                "scoring": scored,
                "monitor": monitored,
                "retrain": decision,
                "train": trained,
                "gate": gated,
                "guard": guarded,
            },
            dag_id=run.dag_id,
            run_id=run.run_id,
            started_at=getattr(run, "start_date", None),
        )

    detected = detect_new_batches()
    ingested = ingest()
    detected >> ingested
    backfilled = backfill(ingested)
    features = build_features(backfilled)
    scored = score_batch(features)
    guarded, monitored = guard_check(scored), monitor(features, scored)
    decision = decide_retrain(monitored, guarded)
    trained = train(decision)
    gated = gate(trained)
    report(ingested, backfilled, features, scored, monitored, decision, trained, gated, guarded)


rollguard_retrain()
