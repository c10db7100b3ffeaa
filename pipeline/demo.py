"""The main job: replay a use case's history (CDNOW by default) week by week through the real Airflow
DAG, embedded, no server.

1. **Initial load**: the first ``initial_weeks`` weekly files land at once (by default the fewest
   that give the use case's fit, validation and evaluation cutoffs) and one DAG run ingests
   them; there is no champion, so it trains (Optuna tunes), the gate bootstraps the first champion.
2. **Weekly runs**: one new weekly file lands, one DAG run (``dag.test()`` against SQLite metadata
   under ``ROLLGUARD_HOME/airflow``) ingests it, scores every customer with the champion, checks
   drift and the guard, and retrains only when the evidence asks for it.
3. **Faults, on by default**: a malformed weekly file lands beside a good one (quarantined, the
   run goes on); a model trained on shuffled labels is registered and gated (rejected), then a
   person forces it into production (``promote --force``), and the next run's guard rolls it back.
4. A week-by-week table and where to look.

The job is resumable: started again on the same home it continues after the newest delivered week,
and every step it repeats is idempotent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from domain.evaluation import TrainingDataError, evaluation_rows, plan_cutoffs
from pipeline import feed
from pipeline.airflow_env import DAGS_FOLDER, configure_airflow
from pipeline.faults import register_shuffled_label_model, write_malformed_week
from registry_guard.policy import load_policy
from registry_guard.registry import force_promote, read_pointer, run_gate
from rollguard.errors import RollguardError
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.usecase import default_usecase_name


@dataclass(frozen=True)
class DemoOptions:
    """Knobs of the main job.

    Attributes:
        initial_weeks: weekly files delivered before the first run; None: the fewest that give
            the use case's fit, validation and matured evaluation cutoffs (CDNOW: 20 weeks).
        weeks: weekly runs after the initial load (None: until the log ends).
        faults: inject the malformed file and the broken model.
        malformed_at: weekly run (1-based) whose landing also gets a malformed file.
        broken_at: weekly run after which the broken model is forced into production.
        force_retrain_at: weekly run that asks for a retrain whatever the evidence (shows a gate
            decision between two real versions early in a short demo).
    """

    initial_weeks: int | None = None
    weeks: int | None = 16
    faults: bool = True
    malformed_at: int = 2
    broken_at: int = 5
    force_retrain_at: int = 3


@dataclass
class DemoResult:
    """Everything the job did: one row per DAG run, the events outside the DAG, the timings."""

    home: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _row(report: dict[str, Any], label: str) -> dict[str, Any]:
    """One table row from a run report (see :func:`pipeline.steps.report_step`)."""
    ingest = report.get("ingest") or {}
    train = report.get("train") or {}
    gate = report.get("gate") or {}
    guard = report.get("guard") or {}
    monitored = report.get("monitor") or {}
    outcomes = monitored.get("outcomes") or {}
    kpis = outcomes if outcomes.get("state") == "ok" else {}
    retrain = report.get("retrain") or {}
    ci = gate.get("primary_diff_ci")
    weeks = ingest.get("accepted_weeks") or []
    return {
        "run": label,
        "week": weeks[-1] if weeks else None,
        "rows_accepted": ingest.get("rows_accepted", 0),
        "files_quarantined": len(ingest.get("quarantined") or {}),
        # Results of earlier weeks rebuilt because a late week made them stale (pipeline.backfill).
        "recomputed": (report.get("backfill") or {}).get("recomputed") or [],
        "quarantined": ingest.get("quarantined") or {},
        # The share the retrain rule reads (features drifted since the champion's evaluation
        # cutoff): it explains the "drift" decisions. The share against the champion's training
        # data is ~0.83 every week on CDNOW (the cohort ages), so it stays in the JSON only.
        "drift_share": monitored.get("retrain_drift_share"),
        "training_drift_share": monitored.get("drift_share"),
        "score_psi": monitored.get("psi"),
        "retrain": retrain.get("reason"),
        "tuning": train.get("tuning"),
        "tuning_reason": train.get("tuning_reason"),
        "challenger": train.get("version") if train.get("trained") else None,
        "primary_metric": gate.get("primary_metric"),
        "challenger_primary": gate.get("challenger_primary"),
        "champion_primary": gate.get("champion_primary"),
        "primary_diff_ci": ci,
        "decision": gate.get("outcome"),
        "decision_reason": gate.get("reason_code"),
        "champion": report.get("champion_after"),
        "guard": guard.get("state"),
        "rolled_back_to": guard.get("rolled_back_to"),
        "kpi_cutoff": monitored.get("matured_cutoff") if kpis else None,
        "quality_state": outcomes.get("quality_state"),
        "live_ap": kpis.get("average_precision"),
        "lift": kpis.get("lift"),
        "revenue_share": kpis.get("targeted_value_share"),
        "random_revenue_share": kpis.get("random_value_share"),
        "live_mae": kpis.get("mae"),
        "live_bias": kpis.get("bias"),
        "baseline_mae": kpis.get("baseline_mae") or {},
    }


def _percent(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def format_row(row: dict[str, Any]) -> str:
    """One fixed-width line of the week table. Binary classification: the gate's AP and the CI of
    the AP difference, then lift and value share of the targeted rows; regression: the gate's MAE
    and the CI of the relative MAE difference (%), then the realized MAE and that of the first
    declared baseline."""
    ci = row.get("primary_diff_ci")
    regression = row.get("primary_metric") == "mae" or row.get("live_mae") is not None
    if ci and ci[0] is not None:
        ci_text = (
            f"[{100 * ci[0]:+.1f}%,{100 * ci[1]:+.1f}%]"
            if regression
            else f"[{ci[0]:+.3f},{ci[1]:+.3f}]"
        )
    else:
        ci_text = "-"
    spec = ".1f" if regression else ".3f"
    tuning = row.get("tuning") or "-"
    if row.get("tuning_reason") and tuning != "-":
        tuning = f"{tuning}:{row['tuning_reason']}"
    rollback = f"->v{row['rolled_back_to']}" if row.get("rolled_back_to") else "-"
    return (
        f"{_fmt(row.get('week')):9} {row.get('rows_accepted', 0):6} {row.get('files_quarantined', 0):3} "
        f"{_fmt(row.get('drift_share'), '.2f'):>5} {_fmt(row.get('retrain')):18.18} "
        f"{tuning:24.24} {_fmt(row.get('challenger_primary'), spec):>6} "
        f"{_fmt(row.get('champion_primary'), spec):>6} {ci_text:17} {_fmt(row.get('decision')):9} "
        f"{'v' + str(row['champion']) if row.get('champion') else '-':5} "
        f"{_fmt(row.get('guard')):12} {rollback:7} {_kpis(row, regression)}"
    )


def _kpis(row: dict[str, Any], regression: bool) -> str:
    if not regression:
        return (
            f"{_fmt(row.get('lift'), '.2f'):>5} "
            f"{_fmt(_percent(row.get('revenue_share')), '.0f'):>5}"
        )
    baselines = row.get("baseline_mae") or {}
    first = next(iter(baselines.values()), None)
    return f"{_fmt(row.get('live_mae'), '.1f'):>5} {_fmt(first, '.1f'):>5}"


#: Short names of the gate's primary metrics in the table.
_METRIC_ABBREVIATIONS = {"average_precision": "AP", "mae": "MAE"}


def table_header(settings: Settings) -> str:
    """The week table's header line; the primary metric's columns are named after the use case's
    task (average precision for classification, MAE for regression)."""
    usecase = settings.usecase_spec
    metric = _METRIC_ABBREVIATIONS["average_precision" if usecase.is_classification else "mae"]
    kpis = f"{'lift':>5} {'rev%':>5}" if usecase.is_classification else f"{'MAE':>5} {'base':>5}"
    diff = f"{metric} diff 95% CI" if usecase.is_classification else "MAE diff % 95% CI"
    return (
        f"{'week':9} {'rows':>6} {'qua':>3} {'drift':>5} {'retrain?':18} {'tuned/reused':24} "
        f"{'chal' + metric:>6} {'chmp' + metric:>6} {diff:17} {'decision':9} "
        f"{'champ':5} {'guard':12} {'rollbk':7} {kpis}"
    )


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    progress: Callable[[str], None] = print,
) -> DemoResult:
    """Run the main job (module docstring). ``progress`` receives one line per step.

    Raises:
        RollguardError: a DAG run failed (with the failed task named); its log is in the
            Airflow home.
    """

    start = time.perf_counter()
    settings.ensure_dirs()
    open_store(settings).dispose()
    configure_airflow(settings)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    dag = _load_dag()
    result = DemoResult(home=str(settings.home))

    delivered = feed.delivered_weeks(settings)
    initial = options.initial_weeks or initial_weeks_needed(settings)
    if len(delivered) < initial:
        replay = feed.replay(settings, weeks=initial - len(delivered))
        progress(f"initial load: {len(replay.written)} weekly files in {settings.landing_dir}")
    label = "initial"
    result.rows.append(_run_once(dag, settings, label, {}, progress))

    run = 0
    while options.weeks is None or run < options.weeks:
        run += 1
        replay = feed.replay(settings, weeks=1)
        if not replay.written:
            progress(replay.note or "the log has no more complete weeks")
            break
        week = replay.newest_week or "?"
        if options.faults and run == options.malformed_at:
            name = write_malformed_week(settings, week)
            result.events.append({"run": run, "event": "malformed file landed", "file": name})
            progress(f"fault: a malformed file {name} lands beside {week}")
        conf = {"force_retrain": True} if run == options.force_retrain_at else {}
        result.rows.append(_run_once(dag, settings, f"week {run}", conf, progress))
        if options.faults and run == options.broken_at:
            result.events.extend(_force_broken_model(settings, progress))
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def initial_weeks_needed(settings: Settings) -> int:
    """The fewest leading weeks of the use case's history from which
    :func:`domain.evaluation.plan_cutoffs` finds every fit, validation and evaluation cutoff.

    Raises:
        RollguardError: the whole history is too short.
    """
    usecase = settings.usecase_spec
    weeks = feed.available_weeks(settings)
    for n in range(1, len(weeks) + 1):
        try:
            plan_cutoffs(
                usecase,
                weeks[:n],
                n_fit=settings.training_cutoffs,
                n_validation=settings.validation_cutoffs,
                horizon_days=settings.horizon_days,
            )
        except TrainingDataError:
            continue
        return n
    raise RollguardError(
        f"the {usecase.name} history ({len(weeks)} weeks) is too short for "
        f"{settings.training_cutoffs} fit, {settings.validation_cutoffs} validation and "
        f"{usecase.evaluation_cutoffs} evaluation cutoffs"
    )


def _load_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RollguardError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag("rollguard_retrain")


def _run_once(
    dag: Any, settings: Settings, label: str, conf: dict[str, Any], progress: Callable[[str], None]
) -> dict[str, Any]:
    started = time.perf_counter()
    dagrun = dag.test(run_conf=conf)
    seconds = time.perf_counter() - started
    state = str(getattr(dagrun, "state", "unknown"))
    if state != "success":
        failed = [
            ti.task_id
            for ti in dagrun.get_task_instances()
            if str(ti.state) in ("failed", "upstream_failed")
        ]
        raise RollguardError(
            f"DAG run {dagrun.run_id} ended {state}; failed tasks: {failed}. "
            f"Task logs: {settings.home / 'airflow' / 'logs'}"
        )
    report_path = (
        settings.reports_dir
        / "runs"
        / (dagrun.run_id.replace(":", "-").replace("+", "_") + ".json")
    )
    if report_path.exists():
        report = json.loads(report_path.read_text())
        row = _row(report, label)
    else:  # short-circuited: nothing new had landed
        row = {"run": label, "week": None, "rows_accepted": 0, "retrain": "no new data"}
    row["seconds"] = round(seconds, 1)
    progress(format_row(row) + f"  ({seconds:.0f}s)")
    return row


def _force_broken_model(
    settings: Settings, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Register a shuffled-label model, gate it (rejected), then force it in as a person would."""

    events: list[dict[str, Any]] = []
    broken = register_shuffled_label_model(settings)
    client, engine = mlflow_client(settings), open_store(settings)
    gate = run_gate(
        evaluation_rows(settings).rows,
        model_name=settings.model_name,
        policy=load_policy(settings.gate_policy_path),
        client=client,
        engine=engine,
        usecase=settings.usecase_spec,
        budget=settings.targeting_budget,
        version=broken.version,
        actor="pipeline",
    )
    events.append(
        {
            "event": "broken model gated",
            "version": broken.version,
            "outcome": gate.decision.outcome,
            "reason_code": gate.decision.reason_code,
            "reasons": list(gate.decision.reasons)[:2],
        }
    )
    progress(
        f"fault: v{broken.version} (trained on shuffled labels) gated: {gate.decision.outcome} "
        f"[{gate.decision.reason_code}] {gate.decision.reasons[0] if gate.decision.reasons else ''}"
    )
    current = read_pointer(engine, settings.model_name)
    move = force_promote(
        settings.model_name,
        broken.version,
        expected=current,
        reason="demo: a person overrides the gate (rollguard promote --force)",
        evidence={"fault": "shuffled_labels"},
        client=client,
        engine=engine,
    )
    events.append(
        {"event": "human forced promotion", "from": move.from_version, "to": move.to_version}
    )
    progress(f"fault: a person forces v{broken.version} into production over v{current}")
    return events


def where_to_look(settings: Settings) -> str:
    """The closing lines: where each result lives and which command shows it."""
    import shutil
    from pathlib import Path

    home = settings.home
    # The commands as this machine can run them: `make` puts uv in .tools/ when it is not on PATH.
    if shutil.which("uv"):
        run = "uv run"
    elif Path(".tools/bin/uv").exists():
        run = ".tools/bin/uv run"
    else:
        run = str(Path(sys.executable).parent) + "/"
    sep = "" if run.endswith("/") else " "
    # The commands below must look at this run's use case and home, not the defaults.
    env = f"ROLLGUARD_USECASE={settings.usecase} ROLLGUARD_HOME={home} "
    if settings.usecase == default_usecase_name() and home == Path(".rollguard").absolute():
        env = ""
    run = env + run
    return "\n".join(
        [
            "Where to look:",
            f"  run reports (JSON)     {home / 'reports' / 'runs'}",
            f"  quarantined files      {home / 'quarantine'}",
            f"  monitoring (HTML)      {home / 'reports' / 'monitoring'}",
            f"  monitoring figures     {run}{sep}rollguard monitor --week YYYY-MM-DD",
            f"  MLflow UI              {run}{sep}mlflow ui --backend-store-uri {settings.tracking_uri}",
            f"  models and aliases     {run}{sep}rollguard models",
            f"  alias history          {run}{sep}rollguard history",
            f"  serve the champion     {run}{sep}rollguard serve api   (docs at http://127.0.0.1:8000/docs)",
            f"  the UI (with the API)  {run}{sep}rollguard serve ui    (http://127.0.0.1:7860)",
        ]
    )


def summarize(result: DemoResult) -> dict[str, Any]:
    """Counts the README promises: promotions, rejections, quarantines, rollbacks."""
    rows = result.rows
    return {
        "runs": len(rows),
        "promotions": sum(r.get("decision") in ("promote", "bootstrap") for r in rows),
        "gate_rejections": sum(r.get("decision") == "reject" for r in rows)
        + sum(e.get("outcome") == "reject" for e in result.events),
        "files_quarantined": sum(r.get("files_quarantined", 0) for r in rows),
        "rollbacks": sum(bool(r.get("rolled_back_to")) for r in rows),
        "seconds": result.seconds,
    }


def to_json(result: DemoResult) -> dict[str, Any]:
    return {**asdict(result), "summary": summarize(result)}


def format_summary(summary: dict[str, Any]) -> str:
    """The closing count line: runs, promotions, rejections, quarantines, rollbacks."""

    def n(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 else "s")

    return (
        f"{n(summary['runs'], 'DAG run')} in {summary['seconds']:.0f}s: "
        f"{n(summary['promotions'], 'promotion')}, "
        f"{n(summary['gate_rejections'], 'gate rejection')}, "
        f"{n(summary['files_quarantined'], 'quarantined file')}, "
        f"{n(summary['rollbacks'], 'rollback')}"
    )
