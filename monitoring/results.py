"""Writing and reading the monitoring store's ``monitoring_results`` and ``pipeline_runs`` tables,
and reading the champion pointer (monitoring only reads it; ``registry_guard`` moves it).

Recomputing a week replaces its rows: for each ``kind`` written, the week's rows of that kind are
deleted and the new ones inserted in one transaction (the unique key is model, week, kind, metric,
feature), so readers never see half a week.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from monitoring.compute import Figure
from rollguard.db.models import ChampionPointer, MonitoringResult, PipelineRun


def replace_week(
    engine: Engine,
    *,
    model_name: str,
    week: str,
    model_version: str | None,
    figures: Sequence[Figure],
    kinds: Iterable[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Replace the rows of ``week`` (``YYYY-MM-DD`` cutoff) for the given ``kinds`` (default: the
    kinds present in ``figures``) with ``figures``; returns the number of rows written.

    Raises:
        ValueError: two figures share a (kind, metric, feature) key.
    """
    keys = [(f.kind, f.metric, f.feature) for f in figures]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate monitoring figures: {dupes}")
    kinds = set(kinds) if kinds is not None else {f.kind for f in figures}
    ts = now or datetime.now(UTC)
    rows = [
        {
            "model_name": model_name,
            "week": week,
            "model_version": model_version,
            "kind": f.kind,
            "metric": f.metric,
            "feature": f.feature,
            "value": f.value,
            "state": f.state,
            "detail": f.detail,
            "sample_size": f.sample_size,
            "reference_size": f.reference_size,
            "computed_at": ts,
        }
        for f in figures
    ]
    with engine.begin() as conn:
        if kinds:
            conn.execute(
                delete(MonitoringResult).where(
                    MonitoringResult.model_name == model_name,
                    MonitoringResult.week == week,
                    MonitoringResult.kind.in_(sorted(kinds)),
                )
            )
        if rows:
            conn.execute(insert(MonitoringResult), rows)
    return len(rows)


def week_rows(engine: Engine, model_name: str, week: str) -> list[dict[str, Any]]:
    """The stored rows of ``week``, ordered by kind, metric and feature."""
    with engine.connect() as conn:
        result = conn.execute(
            select(MonitoringResult.__table__)
            .where(MonitoringResult.model_name == model_name, MonitoringResult.week == week)
            .order_by(MonitoringResult.kind, MonitoringResult.metric, MonitoringResult.feature)
        )
        return [dict(r._mapping) for r in result]


def record_pipeline_run(
    engine: Engine,
    *,
    dag_id: str,
    run_id: str,
    state: str,
    week: str | None,
    started_at: datetime | None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Write (or overwrite) the ``pipeline_runs`` row of one DAG run.

    ``state`` is ``success`` (the run's report step) or ``failed`` (its failure callback); a run
    that failed a task and then succeeded on a retry or a cleared rerun ends as ``success``, since
    the newest write wins (delete then insert, one transaction, keyed on ``dag_id`` and ``run_id``).

    Raises:
        ValueError: ``state`` is neither ``success`` nor ``failed``.
    """
    if state not in ("success", "failed"):
        raise ValueError(f"pipeline run state must be success or failed, not {state!r}")
    with engine.begin() as conn:
        conn.execute(
            delete(PipelineRun).where(PipelineRun.dag_id == dag_id, PipelineRun.run_id == run_id)
        )
        conn.execute(
            insert(PipelineRun).values(
                dag_id=dag_id,
                run_id=run_id,
                week=week,
                state=state,
                started_at=started_at,
                finished_at=now or datetime.now(UTC),
                detail=json.dumps(detail or {}, default=str, sort_keys=True),
            )
        )


def champion_version(engine: Engine, model_name: str) -> str | None:
    """The champion version recorded in the store's ``champion_pointer`` (None: no champion, or
    never recorded). Read-only; the one function that moves it is in ``registry_guard``."""
    with engine.connect() as conn:
        return conn.execute(
            select(ChampionPointer.version).where(ChampionPointer.model_name == model_name)
        ).scalar_one_or_none()
