"""Backfill: rebuild what a late or corrected week made stale (``docs/design.md``, "Late data").

A week accepted after results that should have read it were computed (it was missing, or its file
was quarantined and later corrected) leaves those results stale; :mod:`domain.lineage` finds them
by comparing the batches each result recorded with the ledger. :func:`backfill` rebuilds them, per
cutoff, oldest first, in dependency order:

1. the feature snapshot (rows and, when matured, labels);
2. the batch predictions of every version that scored that cutoff, rescored by the same version
   on the rebuilt rows (the file is replaced);
3. the week's monitoring rows: drift, and realized quality and KPIs once the label has matured.

It also computes the realized outcomes of earlier cutoffs whose label matured only because a late
week filled a gap (the weekly monitor step computes only the cutoff that matures this week).

Gate decisions and alias moves already made are history: a backfill never rewrites them, never
trains and never moves an alias. The DAG runs :func:`backfill_step` after ingestion, so the next
run repairs what the late week invalidated; ``rollguard backfill --from WEEK`` recomputes every
stored result whose window includes ``WEEK``, stale or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from domain import lineage
from domain.scoring import score_batch
from domain.snapshots import build_snapshot
from domain.warehouse import accepted_batches
from monitoring.weekly import (
    Inputs,
    keep,
    label_matured,
    monitor_drift,
    monitor_outcomes,
    open_inputs,
)
from pipeline.steps import live_quality_rule, model_loader
from rollguard.db.models import IngestionDecision, MonitoringResult
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.weeks import iso_week_label, parse_iso_week


@dataclass(frozen=True)
class Work:
    """One result to rebuild: ``kind`` of :data:`domain.lineage.KINDS` at ``cutoff`` (for
    predictions, of ``model_version``), and why."""

    kind: str
    cutoff: date
    model_version: str
    reason: str

    def as_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "cutoff": self.cutoff.isoformat(),
            "model_version": self.model_version or None,
            "reason": self.reason,
        }


def plan_backfill(
    settings: Settings,
    engine: Engine,
    batches: Sequence[IngestionDecision],
    *,
    from_week: date | None = None,
) -> list[Work]:
    """What to rebuild, oldest cutoff first, in :data:`domain.lineage.KINDS` order per cutoff.

    Without ``from_week``: every stale result (:func:`domain.lineage.stale_results`) and the
    outcomes that came due late (:func:`_due_outcomes`). With ``from_week`` (a Monday): every
    stored snapshot, prediction file and monitored week whose window includes that week, stale
    or not (:func:`_stored_since`).
    """
    if from_week is not None:
        work = _stored_since(settings, engine, from_week)
    else:
        stale = lineage.stale_results(engine, batches, model_name=settings.model_name)
        work = [Work(s.kind, s.cutoff, s.model_version, s.reason) for s in stale]
        work += _due_outcomes(settings, engine, batches, known={(w.kind, w.cutoff) for w in work})
    unique = {(w.kind, w.cutoff, w.model_version): w for w in work}
    return sorted(
        unique.values(), key=lambda w: (w.cutoff, lineage.KINDS.index(w.kind), w.model_version)
    )


def _prediction_files(settings: Settings) -> list[tuple[date, str]]:
    """``(cutoff, version)`` of every stored batch-prediction file."""
    root = settings.warehouse_dir / "predictions"
    out = []
    for path in root.glob("cutoff=*/version=*.parquet") if root.exists() else []:
        cutoff = date.fromisoformat(path.parent.name.split("=", 1)[1])
        out.append((cutoff, path.stem.split("=", 1)[1]))
    return sorted(out)


def _monitored(engine: Engine, model_name: str) -> dict[date, set[str]]:
    """Monitored weeks of ``model_name`` and which parts have figures (``drift``; ``outcomes``
    when a quality figure is neither pending nor missing)."""
    with Session(engine) as session:
        rows = session.execute(
            select(MonitoringResult.week, MonitoringResult.kind, MonitoringResult.state)
            .where(MonitoringResult.model_name == model_name)
            .distinct()
        ).all()
    out: dict[date, set[str]] = {}
    for week, kind, state in rows:
        parts = out.setdefault(date.fromisoformat(week), set())
        if kind == "data_drift":
            parts.add(lineage.DRIFT)
        elif kind == "quality" and state not in ("pending", "no_data"):
            parts.add(lineage.OUTCOMES)
    return out


def _stored_since(settings: Settings, engine: Engine, from_week: date) -> list[Work]:
    """Every stored result whose window includes the week starting ``from_week``."""
    why = f"backfill from {iso_week_label(from_week)}"
    horizon = timedelta(days=settings.horizon_days)
    folder = settings.warehouse_dir / "features"
    work = [
        Work(lineage.SNAPSHOT, c, "", why)
        for c in (
            date.fromisoformat(p.stem.split("=", 1)[1]) for p in folder.glob("cutoff=*.parquet")
        )
        if c + horizon > from_week
    ]
    work += [
        Work(lineage.PREDICTIONS, c, v, why)
        for c, v in _prediction_files(settings)
        if c > from_week
    ]
    for cutoff, parts in _monitored(engine, settings.model_name).items():
        if lineage.DRIFT in parts and cutoff > from_week:
            work.append(Work(lineage.DRIFT, cutoff, "", why))
        if lineage.OUTCOMES in parts and cutoff + horizon > from_week:
            work.append(Work(lineage.OUTCOMES, cutoff, "", why))
    return work


def _due_outcomes(
    settings: Settings,
    engine: Engine,
    batches: Sequence[IngestionDecision],
    *,
    known: set[tuple[str, date]],
) -> list[Work]:
    """Scored cutoffs whose label has matured but whose outcomes were never computed, older than
    the cutoff the weekly monitor step computes this run (the scoring cutoff minus the horizon):
    their label matured late, when a missing week arrived."""
    weeks = sorted({b.week for b in batches if b.week})
    if not weeks:
        return []
    usecase = settings.usecase_spec
    scoring = parse_iso_week(weeks[-1]) + timedelta(days=7)
    this_run = scoring - timedelta(days=usecase.label.horizon_days)
    work = []
    for cutoff in sorted({c for c, _ in _prediction_files(settings)}):
        if cutoff >= this_run or (lineage.OUTCOMES, cutoff) in known:
            continue
        if lineage.recorded(
            engine, lineage.OUTCOMES, cutoff, model_name=settings.model_name
        ) is None and label_matured(usecase, cutoff, weeks):
            work.append(Work(lineage.OUTCOMES, cutoff, "", "its label matured after a late week"))
    return work


def backfill(settings: Settings, *, from_week: date | None = None) -> dict[str, Any]:
    """Rebuild the results :func:`plan_backfill` names; returns ``{"recomputed": [...], "n":
    count, "from_week": ...}`` where each entry says the kind, cutoff, version and why.

    Raises:
        rollguard.errors.RollguardError: a snapshot can no longer be built (the week before its
            cutoff is no longer accepted).
    """
    engine = open_store(settings)
    batches = accepted_batches(settings, engine=engine)
    work = plan_backfill(settings, engine, batches, from_week=from_week)
    inputs: Inputs | None = None
    done: list[Work] = []
    for cutoff in sorted({w.cutoff for w in work}):
        here = [w for w in work if w.cutoff == cutoff]
        if inputs is None:
            inputs = open_inputs(
                settings, rule=live_quality_rule(settings), load_model=model_loader(settings)
            )
        done += _rebuild_cutoff(settings, inputs, cutoff, here)
    engine.dispose()
    weeks = sorted({b.week for b in batches if b.week})
    note = None
    if from_week is not None and (not weeks or from_week > parse_iso_week(weeks[-1])):
        note = (
            f"{iso_week_label(from_week)} is after the newest ingested week "
            f"({weeks[-1] if weeks else 'none'}): no stored result reads it"
        )
    return {
        "from_week": None if from_week is None else iso_week_label(from_week),
        "n": len(done),
        "recomputed": [w.as_dict() for w in done],
        "note": note,
    }


def _rebuild_cutoff(
    settings: Settings, inputs: Inputs, cutoff: date, work: list[Work]
) -> list[Work]:
    """Rebuild one cutoff's results in dependency order (see the module docstring). Monitoring
    rows computed from a prediction file that is rescored now are rebuilt with it, even when
    their own window did not change."""
    kinds = {w.kind for w in work}
    rescore = [w for w in work if w.kind == lineage.PREDICTIONS]
    done = [w for w in work if w.kind == lineage.SNAPSHOT]
    if lineage.SNAPSHOT in kinds or rescore:
        snapshot = build_snapshot(settings, cutoff, engine=inputs.engine)
        features = pd.read_parquet(snapshot.path)
        for w in rescore:
            score_batch(
                settings,
                cutoff,
                model_version=w.model_version,
                predict=inputs.model(w.model_version).predict,
                features=features,
                batch_ids=lineage.window_batches(inputs.batches(), cutoff),
                replace=True,
                engine=inputs.engine,
            )
            done.append(w)
    for kind in (lineage.DRIFT, lineage.OUTCOMES):
        if kind not in kinds and not (rescore and _has_lineage(inputs, kind, cutoff)):
            continue
        section = (monitor_drift if kind == lineage.DRIFT else monitor_outcomes)(inputs, cutoff)
        if kind == lineage.DRIFT or section.summary.get("state") == "ok":
            keep(inputs, section)
        done += [w for w in work if w.kind == kind] or [
            Work(kind, cutoff, "", f"its predictions were rescored: {rescore[0].reason}")
        ]
    return done


def _has_lineage(inputs: Inputs, kind: str, cutoff: date) -> bool:
    return (
        lineage.recorded(inputs.engine, kind, cutoff, model_name=inputs.settings.model_name)
        is not None
    )


def backfill_step(settings: Settings) -> dict[str, Any]:
    """The DAG's backfill step (after ingestion): rebuild what this run's late weeks made stale."""
    return backfill(settings)
