"""The weekly monitoring run: gather a week's inputs, compute its figures, keep them.

Everything about the problem comes from the configured use case (``settings.usecase_spec``): how
rows are built for a cutoff, which columns are features and of which kind, when a label matures,
the task type (which quality figures and KPIs), the money unit and the baselines.

For a scoring cutoff ``C`` (the Monday that starts the scored week; ``week`` in the store):

- **drift** (:func:`monitor_drift`): the rows at ``C`` against the training rows of the version
  that scored ``C`` (its fit cutoffs, version tag ``rollguard.cutoff.fit``; rows rebuilt from the
  warehouse, or read from the snapshot when one exists), and that version's production scores at
  ``C`` against its gate-time scores (the same version scoring the rows at its evaluation
  cutoffs, tag ``rollguard.cutoff.evaluation_pool``, else ``rollguard.cutoff.evaluation``); the
  retrain rule's drift share
  (:func:`monitoring.compute.drift_share`) against the evaluation-cutoff rows.
- **outcomes** (:func:`monitor_outcomes`): realized quality and business KPIs of the predictions
  the serving version made at ``C``, once the label of ``C`` has matured; before that every
  quality and KPI figure is ``pending``.

The DAG's monitor step (:func:`monitor_step`) runs drift for this week's cutoff and outcomes for the
newest cutoff whose label matured this week (``C - horizon``; ``C`` itself when the label is known
at once). Each week's figures replace the week's earlier rows in ``monitoring_results``; Evidently's
HTML reports go to ``reports/monitoring/<model>/<week>/`` and, with the figures, to one MLflow run
per model and week in the experiment ``settings.monitor_experiment`` (see ``docs/monitoring.md``).

Monitoring sits below ``registry_guard`` (which owns the policy file and model loading): the caller
passes the :class:`~monitoring.compute.LiveQualityRule` and a model loader (:class:`Inputs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from domain import lineage
from domain.scoring import load_predictions
from domain.snapshots import read_snapshot
from domain.warehouse import accepted_batches, ingested_weeks, load_records
from monitoring import compute
from monitoring.compute import KPI, QUALITY, RUN, Figure, LiveQualityRule
from monitoring.results import champion_version, replace_week
from rollguard.db.models import IngestionDecision
from rollguard.errors import ConfigurationError
from rollguard.mlflow_client import ensure_experiment, mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.usecase import TaskType, UseCase
from rollguard.weeks import iso_week_label, parse_iso_week

log = logging.getLogger(__name__)

FIT_CUTOFFS_TAG = "rollguard.cutoff.fit"
EVALUATION_CUTOFF_TAG = "rollguard.cutoff.evaluation"
#: The gate's pooled evaluation cutoffs (comma-separated; a use case that pools several small
#: weeks), read before :data:`EVALUATION_CUTOFF_TAG`, as the live guard does.
EVALUATION_POOL_TAG = "rollguard.cutoff.evaluation_pool"
#: Version tag holding the training median of the label (the constant baseline of regression).
TRAINING_MEDIAN_TAG = "baseline.training_median"
#: Metric of the training run holding the gate-time (evaluation) figure ``m``: ``eval_<m>``.
EXPECTED_METRIC = "eval_{}"
#: The gate-time figures each task type reads from the version's training run.
EXPECTED_METRICS: dict[TaskType, tuple[str, ...]] = {
    TaskType.BINARY_CLASSIFICATION: ("average_precision", "roc_auc"),
    TaskType.REGRESSION: ("mae", "rmse", "bias"),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_WEEK = re.compile(r"^\d{4}-W\d{2}$")
#: Loads a registered version: ``load_model(version)`` returns an object whose ``predict(frame)``
#: takes ``usecase.feature_frame(rows)`` and returns shape ``(n,)`` scores.
ModelLoader = Callable[[str], Any]


def parse_week(text: str, option: str = "--week") -> date:
    """A week given as a cutoff date ``YYYY-MM-DD`` (a Monday) or an ISO week ``YYYY-Www`` (its
    Monday): the cutoff that starts the scored week. ``option`` names the command-line option in
    the error (``--week``, ``--from``).

    Raises:
        ConfigurationError: neither form, a date that is not a Monday, or a year outside
            1900..9998 (the arithmetic of weeks before and after the cutoff must stay in range).
    """
    value = text.strip()
    if _ISO_WEEK.match(value):
        try:
            day = parse_iso_week(value)
        except ValueError as exc:
            raise ConfigurationError(f"{option} {text!r}: {exc}") from None
    elif _DATE.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ConfigurationError(f"{option} {text!r}: {exc}") from None
        if day.weekday() != 0:
            raise ConfigurationError(
                f"{option} {text!r} is a {day:%A}: a cutoff is a Monday (or give YYYY-Www)"
            )
    else:
        raise ConfigurationError(
            f"{option} {text!r}: expected YYYY-Www (e.g. 1997-W21) or YYYY-MM-DD"
        )
    if not 1900 <= day.year <= 9998:
        raise ConfigurationError(f"{option} {text!r}: the year must be between 1900 and 9998")
    return day


def serving_version_at(settings: Settings, cutoff: date) -> str | None:
    """The version whose production predictions exist for ``cutoff`` (the newest version number
    when several scored it: the one that served at the end of that run), or None."""
    folder = settings.warehouse_dir / "predictions" / f"cutoff={cutoff.isoformat()}"
    if not folder.exists():
        return None
    versions = [p.stem.split("=", 1)[1] for p in folder.glob("version=*.parquet")]
    return max(versions, key=int) if versions else None


def label_matured(usecase: UseCase, cutoff: date, weeks: list[str]) -> bool:
    """Whether every ISO week the label of ``cutoff`` needs is ingested (always, for a label known
    at once)."""
    have = set(weeks)
    return all(w in have for w in usecase.label_weeks(cutoff))


@dataclass
class Inputs:
    """Lazy, shared inputs of one monitoring call (records, models, version tags).

    Attributes:
        settings: the process settings (``usecase_spec`` is the use case).
        client: an MLflow client on the registry.
        engine: the monitoring store.
        rule: the live-quality rule (from the gate and guard policies; see
            :meth:`LiveQualityRule.from_policies`).
        load_model: loads a registered version (:data:`ModelLoader`).
        spec: the use case; None means ``settings.usecase_spec`` (a test passes its own).
    """

    settings: Settings
    client: Any
    engine: Engine
    rule: LiveQualityRule
    load_model: ModelLoader
    spec: UseCase | None = None
    _records: pd.DataFrame | None = None
    _batches: list[IngestionDecision] | None = None
    _models: dict[str, Any] = field(default_factory=dict)

    @property
    def usecase(self) -> UseCase:
        return self.spec if self.spec is not None else self.settings.usecase_spec

    def batches(self) -> list[IngestionDecision]:
        """The accepted batches this call reads (fixed at first use, so the lineage it records
        names exactly what was read)."""
        if self._batches is None:
            self._batches = accepted_batches(self.settings, engine=self.engine)
        return self._batches

    def records(self) -> pd.DataFrame:
        if self._records is None:
            self._records = load_records(self.settings, engine=self.engine, batches=self.batches())
        return self._records

    def rows(self, cutoff: date, *, label_available: bool = False) -> pd.DataFrame:
        """Row frame at ``cutoff``: the stored snapshot while it is fresh and no label is asked
        for (:func:`domain.snapshots.read_snapshot`), else rebuilt from the warehouse by the use
        case."""
        if not label_available:
            stored = read_snapshot(
                self.settings, cutoff, engine=self.engine, batches=self.batches()
            )
            if stored is not None:
                return stored
        return self.usecase.build_rows(self.records(), cutoff, label_available=label_available)

    def tags(self, version: str) -> dict[str, str]:
        mv = self.client.get_model_version(self.settings.model_name, version)
        return dict(mv.tags or {})

    def model(self, version: str) -> Any:
        if version not in self._models:
            self._models[version] = self.load_model(version)
        return self._models[version]

    def expected(self, version: str) -> dict[str, float | None]:
        """The version's gate-time figures of its task type (run metrics ``eval_<m>``)."""
        mv = self.client.get_model_version(self.settings.model_name, version)
        metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        return {
            m: metrics.get(EXPECTED_METRIC.format(m)) for m in EXPECTED_METRICS[self.usecase.task]
        }


@dataclass
class Section:
    """Figures of one part of a week, with the version they describe and their HTML reports."""

    week: str
    version: str | None
    figures: list[Figure]
    kinds: tuple[str, ...]
    html: dict[str, Any] = field(default_factory=dict)  # file name -> Evidently snapshot
    summary: dict[str, Any] = field(default_factory=dict)


def _cutoffs(tags: dict[str, str], tag: str) -> list[date]:
    raw = tags.get(tag, "")
    return [date.fromisoformat(c.strip()) for c in raw.split(",") if c.strip()]


def _skipped_drift(why: str) -> compute.DriftResult:
    figures = [
        Figure(compute.DATA_DRIFT, m, None, "skipped", detail=why)
        for m in ("drift_share", "drifted_features", "n_features")
    ]
    return compute.DriftResult(figures, None, None, ())


def _gate_time_scores(
    inputs: Inputs, version: str, gate_cutoffs: list[date], live: pd.DataFrame | None
) -> tuple[np.ndarray | None, str]:
    """The version's scores on its evaluation rows, or None and why not."""
    week = ", ".join(c.isoformat() for c in gate_cutoffs)
    if live is None:
        return None, f"version {version} made no predictions for this week"
    if not gate_cutoffs:
        return None, f"version {version} has no tag {EVALUATION_CUTOFF_TAG}"
    gate_rows = pd.concat([inputs.rows(c) for c in gate_cutoffs], ignore_index=True)
    if gate_rows.empty:
        return None, f"no rows at the gate cutoff {week}"
    x = inputs.usecase.feature_frame(gate_rows)
    return np.asarray(inputs.model(version).predict(x), dtype=np.float64), ""


def monitor_drift(inputs: Inputs, cutoff: date) -> Section:
    """Data drift, score drift and run facts of week ``cutoff`` (see the module docstring)."""
    s, usecase = inputs.settings, inputs.usecase
    mapping = compute.ColumnMapping.from_usecase(usecase)
    week = cutoff.isoformat()
    kinds = (compute.DATA_DRIFT, compute.SCORE_DRIFT, RUN)
    version = serving_version_at(s, cutoff) or champion_version(inputs.engine, s.model_name)
    seed, cap = s.monitor_sample_seed, s.monitor_sample_rows
    run = [Figure(RUN, "sample_cap", float(cap), detail=f"seed {seed}")]
    if version is None:
        why = "no champion: nothing to compare with"
        figs = _skipped_drift(why).figures
        figs.append(Figure(compute.SCORE_DRIFT, "psi", None, "skipped", detail=why))
        return Section(week, None, figs + run, kinds, summary={"drift_share": None, "reason": why})
    tags = inputs.tags(version)
    current = inputs.rows(cutoff)
    fit = _cutoffs(tags, FIT_CUTOFFS_TAG)
    reference = pd.DataFrame()
    if fit:
        reference = pd.concat([inputs.rows(c) for c in fit], ignore_index=True)
        drift = compute.data_drift_figures(reference, current, mapping, sample_rows=cap, seed=seed)
    else:
        drift = _skipped_drift(
            f"version {version} has no tag {FIT_CUTOFFS_TAG}: its training data is unknown"
        )
    # Score drift: this week's production scores of `version` vs its gate-time scores.
    live = load_predictions(s, cutoff, version)
    gate_cutoffs = _cutoffs(tags, EVALUATION_POOL_TAG) or _cutoffs(tags, EVALUATION_CUTOFF_TAG)
    ref_scores, skip = _gate_time_scores(inputs, version, gate_cutoffs, live)
    score = compute.score_drift_figures(
        ref_scores,
        None if live is None else live["score"].to_numpy(dtype=np.float64),
        sample_rows=cap,
        seed=seed,
        psi_bins=inputs.rule.psi_bins,
        skip_reason=skip,
    )
    # The retrain rule's drift input: this week's rows against the version's evaluation-cutoff
    # rows, the newest population it was validated on. Training data (several cutoffs older)
    # drifts by construction in an ageing population, so the share above would ask for a retrain
    # every week; this one measures the change since the gate. Stored as run/retrain_drift_share.
    retrain = None
    if gate_cutoffs:
        eval_rows = pd.concat([inputs.rows(c) for c in gate_cutoffs], ignore_index=True)
        retrain = compute.drift_share(
            eval_rows,
            current,
            mapping,
            threshold=s.retrain_drift_threshold,
            sample_rows=cap,
            seed=seed,
        )
        run.append(
            Figure(
                RUN,
                "retrain_drift_share",
                retrain.share,
                "ok" if retrain.share is not None else "skipped",
                detail=f"since the evaluation cutoff {gate_cutoffs[-1]}: {retrain.detail} "
                "(the retrain rule's input)",
            )
        )
    used = next((f for f in drift.figures if f.metric == "drift_share"), None)
    run += [
        Figure(RUN, "current_rows", float(len(current))),
        Figure(RUN, "reference_rows", float(len(reference))),
        Figure(RUN, "sample_size", None if used is None else _f(used.sample_size)),
        Figure(RUN, "reference_size", None if used is None else _f(used.reference_size)),
    ]
    run = [f if f.value is not None or f.state != "ok" else _no_value(f) for f in run]
    psi = next((f.value for f in score.figures if f.metric == "psi"), None)
    return Section(
        week,
        version,
        drift.figures + score.figures + run,
        kinds,
        html={"data_drift.html": drift.snapshot, "score_drift.html": score.snapshot},
        summary={
            "drift_share": drift.drift_share,
            "drifted": list(drift.drifted),
            "retrain_drift_share": None if retrain is None else retrain.share,
            "retrain_drift_threshold": s.retrain_drift_threshold,
            "retrain_drift_exceeded": None if retrain is None else retrain.exceeded,
            "psi": psi,
            "reference_cutoffs": [c.isoformat() for c in fit],
            "current_rows": len(current),
            "reference_rows": len(reference),
        },
    )


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)


def _no_value(f: Figure) -> Figure:
    return Figure(f.kind, f.metric, None, "skipped", f.feature, "not computed (see data_drift)")


def _outcome_figures(
    inputs: Inputs, version: str, predictions: pd.DataFrame, truth: pd.DataFrame
) -> list[Figure]:
    """Quality and KPI figures of one matured week, by the use case's task type."""
    usecase, rule = inputs.usecase, inputs.rule
    key, label, value = usecase.entity_column, usecase.label.column, usecase.value.column
    joined = predictions.merge(truth[[key, label]], on=key, how="inner")
    expected = inputs.expected(version)
    if usecase.task is TaskType.REGRESSION:
        quality = compute.regression_quality_figures(
            joined["score"].to_numpy(dtype=np.float64),
            joined[label].to_numpy(dtype=np.float64, na_value=np.nan),
            expected_mae=expected.get("mae"),
            expected_rmse=expected.get("rmse"),
            expected_bias=expected.get("bias"),
            rule=rule,
        )
        median = inputs.tags(version).get(TRAINING_MEDIAN_TAG)
        kpis = compute.regression_kpi_figures(
            predictions,
            truth,
            key=key,
            label=label,
            value=value,
            baselines={b.name: b.column for b in usecase.baselines},
            training_median=float(median) if median not in (None, "") else None,
            unit=usecase.value.unit,
        )
        return quality + kpis
    quality = compute.quality_figures(
        joined["score"].to_numpy(dtype=np.float64),
        joined[label].to_numpy(dtype=np.int64),
        joined["targeted"].to_numpy(dtype=bool),
        expected_average_precision=expected.get("average_precision"),
        expected_roc_auc=expected.get("roc_auc"),
        rule=rule,
    )
    return quality + compute.kpi_figures(predictions, truth, key=key, label=label, value=value)


def monitor_outcomes(inputs: Inputs, cutoff: date) -> Section:
    """Realized quality and business KPIs of the predictions served at ``cutoff``."""
    s, usecase = inputs.settings, inputs.usecase
    week = cutoff.isoformat()
    kinds = (QUALITY, KPI)
    names = [(QUALITY, m) for m in compute.quality_metrics(usecase.task)] + [
        (KPI, m) for m in compute.kpi_metrics(usecase.task)
    ]
    version = serving_version_at(s, cutoff)

    def every(state: str, why: str) -> Section:
        figs = [Figure(k, m, None, state, detail=why) for k, m in names]
        return Section(week, version, figs, kinds, summary={"state": state, "reason": why})

    if version is None:
        return every("no_data", f"no production predictions for {week}")
    if not label_matured(usecase, cutoff, ingested_weeks(s, engine=inputs.engine)):
        horizon = usecase.label.horizon_days
        return every("pending", f"the {horizon}-day label of {week} has not matured yet")
    predictions = load_predictions(s, cutoff, version)
    truth = inputs.rows(cutoff, label_available=True)
    figures = _outcome_figures(inputs, version, predictions, truth)
    value = {f.metric: f.value for f in figures if not f.feature}
    verdict = next(f for f in figures if f.kind == QUALITY and f.metric == "degraded")
    judged = compute.JUDGED_METRIC[usecase.task]
    return Section(
        week,
        version,
        figures,
        kinds,
        summary={
            "state": "ok",
            "quality_state": verdict.state,
            "degraded": verdict.value,
            judged: value.get(judged),
            **(
                {"average_precision": value.get("average_precision")}
                if usecase.is_classification
                else {}
            ),
            **{m: value.get(m) for m in compute.kpi_metrics(usecase.task)},
            **(
                {}
                if usecase.is_classification
                else {
                    "baseline_mae": {
                        f.feature: f.value
                        for f in figures
                        if f.kind == KPI and f.metric == "baseline_mae" and f.feature
                    }
                }
            ),
        },
    )


# --- keeping the figures ----------------------------------------------------------------------------
def report_dir(settings: Settings, week: str) -> Path:
    """Folder of a week's HTML reports: ``reports/monitoring/<model>/<week>/``."""
    return settings.reports_dir / "monitoring" / settings.model_name / week


def keep(inputs: Inputs, section: Section) -> dict[str, Any]:
    """Write ``section`` to the store, its HTML reports to the reports folder, and both to the
    week's MLflow monitoring run; returns ``{"rows", "html", "mlflow_run_id"}``."""
    s = inputs.settings
    rows = replace_week(
        inputs.engine,
        model_name=s.model_name,
        week=section.week,
        model_version=section.version,
        figures=section.figures,
        kinds=section.kinds,
    )
    folder = report_dir(s, section.week)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, snapshot in section.html.items():
        if snapshot is not None:
            snapshot.save_html(str(folder / name))
            written.append(str(folder / name))
    figures_json = folder / f"figures_{'_'.join(section.kinds)}.json"
    figures_json.write_text(
        json.dumps([f.__dict__ for f in section.figures], indent=1, default=str), encoding="utf-8"
    )
    run_id = _log_to_mlflow(inputs, section, [*written, str(figures_json)])
    _record_lineage(inputs, section)
    return {"rows": rows, "html": written, "mlflow_run_id": run_id}


def _record_lineage(inputs: Inputs, section: Section) -> None:
    """The section's lineage (:mod:`domain.lineage`): drift reads the weeks before the cutoff,
    realized outcomes also the label horizon; a pending or empty outcome section read no label
    and records nothing (the monitor step or a backfill computes it once the label matures)."""
    cutoff = date.fromisoformat(section.week)
    if compute.DATA_DRIFT in section.kinds:
        kind, until = lineage.DRIFT, cutoff
    elif section.summary.get("state") == "ok":
        kind = lineage.OUTCOMES
        until = lineage.window_end(cutoff, inputs.usecase.label.horizon_days, labelled=True)
    else:
        return
    lineage.record(
        inputs.engine,
        kind=kind,
        cutoff=cutoff,
        until=until,
        batch_ids=lineage.window_batches(inputs.batches(), until),
        model_name=inputs.settings.model_name,
        n_rows=len(section.figures),
    )


def _log_to_mlflow(inputs: Inputs, section: Section, files: list[str]) -> str:
    """Log to the one run of (model, week) in the monitoring experiment (created on first use)."""
    from mlflow.entities import Metric, RunTag  # heavy optional library, loaded when logging

    s, client = inputs.settings, inputs.client
    experiment_id = ensure_experiment(
        client, s.monitor_experiment, artifact_root=s.mlflow_artifact_root
    )
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`rollguard.model_name` = '{s.model_name}' "
        f"and tags.`rollguard.week` = '{section.week}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(
            experiment_id,
            run_name=f"monitor {s.model_name} {section.week}",
            tags={"rollguard.model_name": s.model_name, "rollguard.week": section.week},
        ).info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(".".join(p for p in (f.kind, f.metric, f.feature) if p), float(f.value), now, 0)
        for f in section.figures
        if f.value is not None
    ]
    tags = [RunTag(f"rollguard.{k}.model_version", str(section.version)) for k in section.kinds]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    client.log_batch(run_id, tags=tags)
    for path in files:
        client.log_artifact(run_id, path, artifact_path="monitoring")
    # MLflow prints the run's URL to stdout when a run ends; stdout belongs to `--json` output.
    with contextlib.redirect_stdout(sys.stderr):
        client.set_terminated(run_id)
    return run_id


# --- entry points -------------------------------------------------------------------------------------
def open_inputs(settings: Settings, *, rule: LiveQualityRule, load_model: ModelLoader) -> Inputs:
    """Inputs on the configured MLflow registry and monitoring store."""
    return Inputs(settings, mlflow_client(settings), open_store(settings), rule, load_model)


def monitor_week(settings: Settings, cutoff: date, *, inputs: Inputs) -> dict[str, Any]:
    """Recompute week ``cutoff`` in full (drift, then quality and KPIs when its label has matured,
    ``pending`` before) and keep it; returns the figures and where they went.

    Raises:
        ConfigurationError: nothing ingested covers ``cutoff`` (the week before it is missing).
    """
    weeks = ingested_weeks(settings, engine=inputs.engine)
    if iso_week_label(cutoff - timedelta(days=7)) not in weeks:
        newest = weeks[-1] if weeks else "none"
        raise ConfigurationError(
            f"week {cutoff.isoformat()} cannot be monitored: week "
            f"{iso_week_label(cutoff - timedelta(days=7))} is not ingested (newest: {newest})"
        )
    out: dict[str, Any] = {"week": cutoff.isoformat(), "model_name": settings.model_name}
    stale = [
        s
        for s in lineage.stale_results(
            inputs.engine, inputs.batches(), model_name=settings.model_name, cutoff=cutoff
        )
        if s.kind == lineage.PREDICTIONS
    ]
    out["warnings"] = [
        f"the predictions of version {s.model_version} at {cutoff} are stale ({s.reason}); "
        f"their score drift, quality and KPIs describe the old rows: run `rollguard backfill` "
        "to rescore them"
        for s in stale
    ]
    for section in (monitor_drift(inputs, cutoff), monitor_outcomes(inputs, cutoff)):
        kept = keep(inputs, section)
        out.setdefault("model_version", section.version)
        out.setdefault("kept", []).append(kept)
        out.setdefault("figures", []).extend(
            {k: v for k, v in f.__dict__.items() if v is not None} for f in section.figures
        )
    return out


def monitor_step(settings: Settings, features: dict[str, Any], *, inputs: Inputs) -> dict[str, Any]:
    """The DAG's monitor step: drift of this week's cutoff, outcomes of the cutoff whose label
    matured this week (``cutoff - horizon``; the cutoff itself when the label is known at once).
    Returns a small JSON-ready summary (no data)."""
    cutoff_text = features.get("cutoff")
    if not cutoff_text:
        return {"drift_share": None, "reason": "no features this week"}
    cutoff = date.fromisoformat(cutoff_text)
    drift = monitor_drift(inputs, cutoff)
    this_week = monitor_outcomes(inputs, cutoff)
    matured = cutoff - timedelta(days=inputs.usecase.label.horizon_days)
    outcomes = this_week if matured == cutoff else monitor_outcomes(inputs, matured)
    kept = [keep(inputs, s) for s in (drift, this_week)]
    if matured != cutoff and outcomes.version is not None:  # never scored: nothing to record
        kept.append(keep(inputs, outcomes))
    inputs.engine.dispose()
    return {
        "week": cutoff_text,
        "model_version": drift.version,
        **{
            k: drift.summary.get(k)
            for k in (
                "drift_share",
                "drifted",
                "retrain_drift_share",
                "retrain_drift_threshold",
                "retrain_drift_exceeded",
                "psi",
                "reason",
            )
        },
        "matured_cutoff": matured.isoformat(),
        "outcomes_version": outcomes.version,
        "outcomes": outcomes.summary,
        "rows": sum(k["rows"] for k in kept),
        "mlflow_run_ids": sorted({k["mlflow_run_id"] for k in kept}),
    }
