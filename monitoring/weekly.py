"""The weekly monitoring run: gather a week's inputs, compute its figures, keep them.

For a scoring cutoff ``C`` (the Monday that starts the scored week; ``week`` in the store):

- **drift** (:func:`monitor_drift`): the feature rows at ``C`` against the training rows of the
  version that scored ``C`` (its fit cutoffs, version tag ``rollguard.cutoff.fit``; features rebuilt
  from the warehouse, or read from the snapshot when one exists), and that version's production
  scores at ``C`` against its gate-time scores (the same version scoring the feature rows at its
  evaluation cutoff, tag ``rollguard.cutoff.evaluation``: what :mod:`registry_guard.guard` does).
- **outcomes** (:func:`monitor_outcomes`): realized quality and business KPIs of the predictions
  the serving version made at ``C``, once the 28-day label of ``C`` has matured; before that every
  quality and KPI figure is ``pending``.

The DAG's monitor step (:func:`monitor_step`) runs drift for this week's cutoff and outcomes for the
newest cutoff whose label matured this week (``C - horizon``). Each week's figures replace the
week's earlier rows in ``monitoring_results``; Evidently's HTML reports go to
``reports/monitoring/<model>/<week>/`` and, with the figures, to one MLflow run per model and week
in the experiment ``settings.monitor_experiment`` (see ``docs/monitoring.md``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitoring import compute
from monitoring.compute import KPI, QUALITY, RUN, Figure
from rollguard.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from rollguard.settings import Settings

log = logging.getLogger(__name__)

FIT_CUTOFFS_TAG = "rollguard.cutoff.fit"
EVALUATION_CUTOFF_TAG = "rollguard.cutoff.evaluation"
#: Metric of the training run holding the gate-time (evaluation cutoff) average precision.
EXPECTED_AP_METRIC = "eval_average_precision"
EXPECTED_AUC_METRIC = "eval_roc_auc"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_WEEK = re.compile(r"^\d{4}-W\d{2}$")


def parse_week(text: str) -> date:
    """A week given as a cutoff date ``YYYY-MM-DD`` (a Monday) or an ISO week ``YYYY-Www`` (its
    Monday): the cutoff that starts the scored week.

    Raises:
        ConfigurationError: neither form, or a date that is not a Monday.
    """
    from rollguard.weeks import parse_iso_week

    value = text.strip()
    if _ISO_WEEK.match(value):
        try:
            return parse_iso_week(value)
        except ValueError as exc:
            raise ConfigurationError(f"--week {text!r}: {exc}") from None
    if _DATE.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ConfigurationError(f"--week {text!r}: {exc}") from None
        if day.weekday() != 0:
            raise ConfigurationError(
                f"--week {text!r} is a {day:%A}: a cutoff is a Monday (or give YYYY-Www)"
            )
        return day
    raise ConfigurationError(f"--week {text!r}: expected YYYY-Www (e.g. 1997-W21) or YYYY-MM-DD")


def serving_version_at(settings: Settings, cutoff: date) -> str | None:
    """The version whose production predictions exist for ``cutoff`` (the newest version number
    when several scored it: the one that served at the end of that run), or None."""
    folder = settings.warehouse_dir / "predictions" / f"cutoff={cutoff.isoformat()}"
    if not folder.exists():
        return None
    versions = [p.stem.split("=", 1)[1] for p in folder.glob("version=*.parquet")]
    return max(versions, key=int) if versions else None


@dataclass
class Inputs:
    """Lazy, shared inputs of one monitoring call (transactions, models, version tags)."""

    settings: Settings
    client: Any
    engine: Engine
    _tx: pd.DataFrame | None = None
    _models: dict[str, Any] = field(default_factory=dict)

    def transactions(self) -> pd.DataFrame:
        from domain.warehouse import load_records

        if self._tx is None:
            self._tx = load_records(self.settings, engine=self.engine)
        return self._tx

    def features(self, cutoff: date) -> pd.DataFrame:
        """Feature rows at ``cutoff``: the stored snapshot when there is one, else rebuilt."""
        from domain.snapshots import snapshot_path
        from usecases.cdnow.features import build_features

        path = snapshot_path(self.settings, cutoff)
        if path.exists():
            return pd.read_parquet(path)
        return build_features(
            self.transactions(),
            cutoff,
            label_available=False,
            horizon_days=self.settings.horizon_days,
        )

    def tags(self, version: str) -> dict[str, str]:
        mv = self.client.get_model_version(self.settings.model_name, version)
        return dict(mv.tags or {})

    def model(self, version: str) -> Any:
        from registry_guard.registry import load_version

        if version not in self._models:
            self._models[version] = load_version(self.client, self.settings.model_name, version)
        return self._models[version]

    def expected_ap(self, version: str) -> float | None:
        """The version's gate-time average precision (its run's ``eval_average_precision``)."""
        return self._run_metric(version, EXPECTED_AP_METRIC)

    def expected_auc(self, version: str) -> float | None:
        """The version's gate-time ROC AUC (its run's ``eval_roc_auc``)."""
        return self._run_metric(version, EXPECTED_AUC_METRIC)

    def _run_metric(self, version: str, metric: str) -> float | None:
        mv = self.client.get_model_version(self.settings.model_name, version)
        if not mv.run_id:
            return None
        return self.client.get_run(mv.run_id).data.metrics.get(metric)


@dataclass
class Section:
    """Figures of one part of a week, with the version they describe and their HTML reports."""

    week: str
    version: str | None
    figures: list[Figure]
    kinds: tuple[str, ...]
    html: dict[str, Any] = field(default_factory=dict)  # file name -> Evidently snapshot
    summary: dict[str, Any] = field(default_factory=dict)


def _fit_cutoffs(tags: dict[str, str]) -> list[date]:
    raw = tags.get(FIT_CUTOFFS_TAG, "")
    return [date.fromisoformat(c) for c in raw.split(",") if c.strip()]


def monitor_drift(inputs: Inputs, cutoff: date) -> Section:
    """Data drift, score drift and run facts of week ``cutoff`` (see the module docstring)."""
    from registry_guard.policy import load_guard_policy
    from registry_guard.registry import read_pointer
    from usecases.cdnow.features import FEATURE_COLUMNS

    s = inputs.settings
    week = cutoff.isoformat()
    kinds = (compute.DATA_DRIFT, compute.SCORE_DRIFT, RUN)
    version = serving_version_at(s, cutoff) or read_pointer(inputs.engine, s.model_name)
    seed, cap = s.monitor_sample_seed, s.monitor_sample_rows
    run = [Figure(RUN, "sample_cap", float(cap), detail=f"seed {seed}")]
    if version is None:
        why = "no champion: nothing to compare with"
        figs = [
            Figure(compute.DATA_DRIFT, m, None, "skipped", detail=why)
            for m in ("drift_share", "drifted_features", "n_features")
        ] + [Figure(compute.SCORE_DRIFT, "psi", None, "skipped", detail=why)]
        return Section(week, None, figs + run, kinds, summary={"drift_share": None, "reason": why})
    tags = inputs.tags(version)
    current = inputs.features(cutoff)
    fit = _fit_cutoffs(tags)
    if fit:
        reference = pd.concat([inputs.features(c) for c in fit], ignore_index=True)
        drift = compute.data_drift_figures(
            reference, current, FEATURE_COLUMNS, sample_rows=cap, seed=seed
        )
    else:
        why = f"version {version} has no tag {FIT_CUTOFFS_TAG}: its training data is unknown"
        reference = pd.DataFrame()
        drift = compute.DriftResult(
            [
                Figure(compute.DATA_DRIFT, m, None, "skipped", detail=why)
                for m in ("drift_share", "drifted_features", "n_features")
            ],
            None,
            None,
            (),
        )
    # Score drift: this week's production scores of `version` vs its gate-time scores.
    from domain.scoring import load_predictions

    live = load_predictions(s, cutoff, version)
    gate_cutoff = tags.get(EVALUATION_CUTOFF_TAG)
    ref_scores = None
    skip = ""
    if live is None:
        skip = f"version {version} made no predictions for {week}"
    elif not gate_cutoff:
        skip = f"version {version} has no tag {EVALUATION_CUTOFF_TAG}"
    else:
        gate_rows = inputs.features(date.fromisoformat(gate_cutoff))
        if gate_rows.empty:
            skip = f"no feature rows at the gate cutoff {gate_cutoff}"
        else:
            x = gate_rows.loc[:, list(FEATURE_COLUMNS)].astype("float64")
            ref_scores = np.asarray(inputs.model(version).predict(x), dtype=np.float64)
    score = compute.score_drift_figures(
        ref_scores,
        None if live is None else live["score"].to_numpy(dtype=np.float64),
        sample_rows=cap,
        seed=seed,
        psi_bins=load_guard_policy(s.gate_policy_path).psi_bins,
        skip_reason=skip,
    )
    # The retrain rule's drift input (pipeline/decisions.py): this week's features against the
    # version's evaluation-cutoff population, the newest one it was validated on. Training data
    # (several cutoffs older) drifts by construction in a closed, ageing cohort such as CDNOW, so
    # the share above would ask for a retrain every week; this one measures the change since the
    # gate. Stored as run/retrain_drift_share.
    retrain_share = None
    if gate_cutoff:
        eval_rows = inputs.features(date.fromisoformat(gate_cutoff))
        since_gate = compute.data_drift_figures(
            eval_rows, current, FEATURE_COLUMNS, sample_rows=cap, seed=seed
        )
        retrain_share = since_gate.drift_share
        run.append(
            Figure(
                RUN,
                "retrain_drift_share",
                retrain_share,
                "ok" if retrain_share is not None else "skipped",
                detail=f"share of features drifted since the evaluation cutoff {gate_cutoff} "
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
            "retrain_drift_share": retrain_share,
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


def monitor_outcomes(inputs: Inputs, cutoff: date) -> Section:
    """Realized quality and business KPIs of the predictions served at ``cutoff``."""
    from domain.scoring import load_predictions
    from domain.warehouse import ingested_weeks
    from registry_guard.policy import load_policy
    from usecases.cdnow.features import LABEL, REVENUE, build_features, label_matured

    s = inputs.settings
    week = cutoff.isoformat()
    kinds = (QUALITY, KPI)
    names = [(QUALITY, m) for m in compute.QUALITY_METRICS] + [
        (KPI, m) for m in compute.KPI_METRICS
    ]
    version = serving_version_at(s, cutoff)

    def every(state: str, why: str) -> Section:
        figs = [Figure(k, m, None, state, detail=why) for k, m in names]
        return Section(week, version, figs, kinds, summary={"state": state, "reason": why})

    if version is None:
        return every("no_data", f"no production predictions for {week}")
    if not label_matured(cutoff, ingested_weeks(s, engine=inputs.engine), s.horizon_days):
        return every("pending", f"the {s.horizon_days}-day label of {week} has not matured yet")
    predictions = load_predictions(s, cutoff, version)
    truth = build_features(
        inputs.transactions(), cutoff, label_available=True, horizon_days=s.horizon_days
    )
    joined = predictions.merge(truth[["customer_id", LABEL]], on="customer_id", how="inner")
    policy = load_policy(s.gate_policy_path)
    quality = compute.quality_figures(
        joined["score"].to_numpy(dtype=np.float64),
        joined[LABEL].to_numpy(dtype=np.int64),
        joined["targeted"].to_numpy(dtype=bool),
        expected_average_precision=inputs.expected_ap(version),
        expected_roc_auc=inputs.expected_auc(version),
        auc_margin=policy.classification.auc_margin,
        n_resamples=policy.n_resamples,
        confidence=policy.confidence,
        seed=policy.seed,
        min_rows=policy.classification.min_rows,
        min_positives=policy.classification.min_positives,
    )
    kpis = compute.kpi_figures(predictions, truth, label=LABEL, revenue=REVENUE)
    value = {f.metric: f.value for f in quality + kpis}
    return Section(
        week,
        version,
        quality + kpis,
        kinds,
        summary={
            "state": "ok",
            "average_precision": value.get("average_precision"),
            "degraded": value.get("degraded"),
            **{m: value.get(m) for m in compute.KPI_METRICS},
        },
    )


# --- keeping the figures ----------------------------------------------------------------------------
def report_dir(settings: Settings, week: str) -> Path:
    """Folder of a week's HTML reports: ``reports/monitoring/<model>/<week>/``."""
    return settings.reports_dir / "monitoring" / settings.model_name / week


def keep(inputs: Inputs, section: Section) -> dict[str, Any]:
    """Write ``section`` to the store, its HTML reports to the reports folder, and both to the
    week's MLflow monitoring run; returns ``{"rows", "html", "mlflow_run_id"}``."""
    from monitoring.results import replace_week

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
    return {"rows": rows, "html": written, "mlflow_run_id": run_id}


def _log_to_mlflow(inputs: Inputs, section: Section, files: list[str]) -> str:
    """Log to the one run of (model, week) in the monitoring experiment (created on first use)."""
    from mlflow.entities import Metric, RunTag

    s, client = inputs.settings, inputs.client
    experiment = client.get_experiment_by_name(s.monitor_experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(s.monitor_experiment)
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
    import time

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
    import contextlib
    import sys

    # MLflow prints the run's URL to stdout when a run ends; stdout belongs to `--json` output.
    with contextlib.redirect_stdout(sys.stderr):
        client.set_terminated(run_id)
    return run_id


# --- entry points -------------------------------------------------------------------------------------
def open_inputs(settings: Settings) -> Inputs:
    """Inputs on the configured MLflow registry and monitoring store."""
    from rollguard.mlflow_client import mlflow_client
    from rollguard.store import open_store

    return Inputs(settings, mlflow_client(settings), open_store(settings))


def monitor_week(
    settings: Settings, cutoff: date, *, inputs: Inputs | None = None
) -> dict[str, Any]:
    """Recompute week ``cutoff`` in full (drift, then quality and KPIs when its label has matured,
    ``pending`` before) and keep it; returns the figures and where they went.

    Raises:
        ConfigurationError: nothing ingested covers ``cutoff`` (the week before it is missing).
    """
    from domain.warehouse import ingested_weeks
    from rollguard.weeks import iso_week_label

    inputs = inputs or open_inputs(settings)
    weeks = ingested_weeks(settings, engine=inputs.engine)
    if iso_week_label(cutoff - timedelta(days=7)) not in weeks:
        newest = weeks[-1] if weeks else "none"
        raise ConfigurationError(
            f"week {cutoff.isoformat()} cannot be monitored: week "
            f"{iso_week_label(cutoff - timedelta(days=7))} is not ingested (newest: {newest})"
        )
    out: dict[str, Any] = {"week": cutoff.isoformat(), "model_name": settings.model_name}
    for section in (monitor_drift(inputs, cutoff), monitor_outcomes(inputs, cutoff)):
        kept = keep(inputs, section)
        out.setdefault("model_version", section.version)
        out.setdefault("kept", []).append(kept)
        out.setdefault("figures", []).extend(
            {k: v for k, v in f.__dict__.items() if v is not None} for f in section.figures
        )
    return out


def monitor_step(settings: Settings, features: dict[str, Any]) -> dict[str, Any]:
    """The DAG's monitor step: drift of this week's cutoff, outcomes of the cutoff whose label
    matured this week (``cutoff - horizon``). Returns a small JSON-ready summary (no data)."""
    cutoff_text = features.get("cutoff")
    if not cutoff_text:
        return {"drift_share": None, "reason": "no features this week"}
    inputs = open_inputs(settings)
    cutoff = date.fromisoformat(cutoff_text)
    drift = monitor_drift(inputs, cutoff)
    pending = monitor_outcomes(inputs, cutoff)
    matured = cutoff - timedelta(days=settings.horizon_days)
    outcomes = monitor_outcomes(inputs, matured)
    kept = [keep(inputs, s) for s in (drift, pending)]
    if outcomes.version is not None:  # never scored: nothing to record for that week
        kept.append(keep(inputs, outcomes))
    inputs.engine.dispose()
    return {
        "week": cutoff_text,
        "model_version": drift.version,
        **{
            k: drift.summary.get(k)
            for k in ("drift_share", "drifted", "retrain_drift_share", "psi", "reason")
        },
        "matured_cutoff": matured.isoformat(),
        "outcomes_version": outcomes.version,
        "outcomes": outcomes.summary,
        "rows": sum(k["rows"] for k in kept),
        "mlflow_run_ids": sorted({k["mlflow_run_id"] for k in kept}),
    }
