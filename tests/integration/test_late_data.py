"""Late data (issue 17, problem 1), on the real CDNOW weeks, a real MLflow tracking server and the
store on SQLite: weeks W07–W18 arrive after W19–W20 were ingested, scored and monitored. The
snapshot, the batch predictions and the monitoring rows of cutoff 1997-05-19 computed without them
are found stale, the monitor says so, and the next run's backfill rebuilds them: the monitored row
count then equals the number of customers in the warehouse."""

from __future__ import annotations

import shutil
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from domain import lineage
from domain.scoring import load_predictions, score_batch
from domain.snapshots import build_snapshot, read_snapshot
from domain.warehouse import accepted_batches, load_records
from monitoring.results import week_rows
from monitoring.weekly import monitor_week, open_inputs
from pipeline import feed
from pipeline.backfill import backfill, backfill_step
from pipeline.ingest import ingest_landing
from pipeline.steps import (
    features_step,
    live_quality_rule,
    model_loader,
    monitor_step,
    score_step,
)
from registry_guard import registry
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.integration.test_guard_rollback import ingest, train_version

CUTOFF = date(1997, 5, 19)  # the Monday after 1997-W20
LATE = [f"1997-W{w:02d}" for w in range(7, 19)]


def _settings(root: Path, mlflow_server: str, model_name: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=root,
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=model_name,
        monitor_sample_rows=50_000,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> tuple[str, str]:
    """``(model name, version)``: a small model trained on a complete 20-week home (shared by
    the tests of this module)."""
    name = f"late-{uuid.uuid4().hex[:10]}"
    complete = _settings(tmp_path_factory.mktemp("complete"), mlflow_server, name)
    engine = open_store(complete)
    ingest(complete, engine, 20)
    version = train_version(complete, engine, mlflow_client(complete))
    engine.dispose()
    return name, version


@pytest.fixture
def scenario(tmp_path: Path, mlflow_server: str, trained: tuple[str, str]) -> dict[str, Any]:
    """A home where W07–W18 are held back (in ``held``) while W01–W06 and W19–W20 land."""
    name, version = trained
    late = _settings(tmp_path / "late", mlflow_server, name)
    feed.replay(late, weeks=20)
    held = tmp_path / "held"
    held.mkdir()
    for path in late.landing_dir.iterdir():
        if any(w in path.name for w in LATE):
            shutil.move(path, held / path.name)
    return {"settings": late, "version": version, "held": held}


def _make_champion(engine: Engine, settings: Settings, version: str) -> None:
    """Make ``version`` the champion of this home's store (the alias is shared with the module's
    other test, whose home may have set it already)."""
    if registry.alias_version(mlflow_client(settings), settings.model_name, "champion") == version:
        return
    registry.move_champion(
        settings.model_name,
        version,
        expected=None,
        actor="human",
        reason="the late-data test's champion",
        client=mlflow_client(settings),
        engine=engine,
    )


def _monitored_rows(engine: Engine, settings: Settings) -> float:
    rows = week_rows(engine, settings.model_name, CUTOFF.isoformat())
    return next(r["value"] for r in rows if r["kind"] == "run" and r["metric"] == "current_rows")


def test_late_weeks_make_results_stale_and_the_next_run_rebuilds_them(
    scenario: dict[str, Any],
) -> None:
    s, version = scenario["settings"], scenario["version"]
    engine = open_store(s)
    assert len(ingest_landing(s, engine=engine).accepted) == 8  # W01–W06, W19, W20
    _make_champion(engine, s, version)

    # The weekly run while W07–W18 are missing.
    features = features_step(s)
    assert features["cutoff"] == CUTOFF.isoformat()
    assert features["missing_weeks"] == LATE
    assert score_step(s, features)["scored"]
    monitor_step(s, features)
    incomplete = _monitored_rows(engine, s)
    assert incomplete == features["n_rows"] < 23_570

    # The late weeks arrive and are accepted.
    for path in scenario["held"].iterdir():
        shutil.move(path, s.landing_dir / path.name)
    assert len(ingest_landing(s, engine=engine).accepted) == len(LATE)
    customers = load_records(s, engine=engine)["customer_id"].nunique()
    assert customers == 23_570

    # `rollguard monitor --week 1997-W21` now compares every customer, and warns that the
    # predictions it reads were made without the late weeks.
    inputs = open_inputs(s, rule=live_quality_rule(s), load_model=model_loader(s))
    shown = monitor_week(s, CUTOFF, inputs=inputs)
    assert _monitored_rows(engine, s) == customers
    assert len(shown["warnings"]) == 1 and "1997-W07" in shown["warnings"][0]
    assert "rollguard backfill" in shown["warnings"][0]

    # Staleness is a query: the snapshot, the predictions and the drift rows of the cutoff.
    batches = accepted_batches(s, engine=engine)
    stale = lineage.stale_results(engine, batches, model_name=s.model_name)
    at_cutoff = {(x.kind, x.model_version) for x in stale if x.cutoff == CUTOFF}
    assert at_cutoff == {("snapshot", ""), ("predictions", version)}  # drift: just recomputed
    assert all(x.added == tuple(LATE) for x in stale if x.cutoff == CUTOFF)
    assert read_snapshot(s, CUTOFF, engine=engine) is None  # never read as if it were fresh

    # The next run's backfill step rebuilds them in order and says why.
    result = backfill_step(s)
    recomputed = {(r["kind"], r["cutoff"]) for r in result["recomputed"]}
    assert {("snapshot", "1997-05-19"), ("predictions", "1997-05-19"), ("drift", "1997-05-19")} <= (
        recomputed
    )
    assert all("1997-W07" in r["reason"] for r in result["recomputed"])
    assert (
        lineage.stale_results(engine, accepted_batches(s, engine=engine), model_name=s.model_name)
        == []
    )
    assert _monitored_rows(engine, s) == customers
    predictions = load_predictions(s, CUTOFF, version)
    assert predictions is not None and len(predictions) == customers
    fresh = read_snapshot(s, CUTOFF, engine=engine)
    assert isinstance(fresh, pd.DataFrame) and len(fresh) == customers

    # A second run has nothing left to do; --from recomputes on request.
    assert backfill(s)["n"] == 0
    forced = backfill(s, from_week=date(1997, 5, 12))
    assert {r["kind"] for r in forced["recomputed"]} >= {"snapshot", "predictions", "drift"}
    assert all(r["reason"] == "backfill from 1997-W20" for r in forced["recomputed"])
    assert forced["note"] is None
    beyond = backfill(s, from_week=date(2099, 1, 5))
    assert beyond["n"] == 0 and "after the newest ingested week (1997-W20)" in beyond["note"]
    engine.dispose()


def test_a_label_that_matures_late_gets_its_outcomes(
    scenario: dict[str, Any],
) -> None:
    """A horizon week that was missing arrives later: the cutoff's realized quality, pending so
    far, is computed by the next backfill (the monitor step computes only this week's)."""
    s, version = scenario["settings"], scenario["version"]
    engine = open_store(s)
    for path in scenario["held"].iterdir():  # everything but W14 is on time
        if "1997-W14" not in path.name:
            shutil.move(path, s.landing_dir / path.name)
    ingest_landing(s, engine=engine)
    target = date(1997, 3, 24)  # the Monday of W13: its 28-day label needs W13–W16
    snap = build_snapshot(s, target, engine=engine)
    assert not snap.label_available  # W14 is missing
    model = registry.load_version(mlflow_client(s), s.model_name, version)
    score_batch(
        s, target, model_version=version, predict=model.predict, features=pd.read_parquet(snap.path)
    )
    assert backfill(s)["n"] == 0  # pending: nothing to compute yet
    shutil.move(next(scenario["held"].glob("*1997-W14*")), s.landing_dir)
    ingest_landing(s, engine=engine)
    result = backfill(s)
    kinds = {(r["kind"], r["cutoff"]) for r in result["recomputed"]}
    assert ("outcomes", target.isoformat()) in kinds
    quality = [
        r
        for r in week_rows(engine, s.model_name, target.isoformat())
        if r["kind"] == "quality" and r["metric"] == "average_precision"
    ]
    assert quality and quality[0]["state"] == "ok" and quality[0]["value"] > 0
    engine.dispose()
