"""The live guard on the real CDNOW weeks, a real MLflow tracking server and the monitoring store on
SQLite: a healthy champion stays, a broken one forced past the gate is rolled back once."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, select

from domain.evaluation import evaluation_rows, stack_rows
from domain.scoring import score_batch
from domain.warehouse import ingested_weeks, load_records
from pipeline import feed
from pipeline.ingest import ingest_landing
from registry_guard import registry
from registry_guard.guard import (
    EVALUATION_CUTOFF_TAG,
    EVALUATION_POOL_TAG,
    check_champion,
    latest_guard_state,
)
from registry_guard.policy import load_policy
from rollguard.db.models import AliasAudit, GuardCheckRow
from rollguard.mlflow_client import mlflow_client
from rollguard.settings import Settings
from rollguard.store import open_store
from rollguard.weeks import parse_iso_week
from usecases.cdnow import USECASE
from usecases.cdnow.features import FEATURE_COLUMNS, LABEL


@pytest.fixture
def settings(tmp_path: Path, mlflow_server: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=tmp_path / "home",
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"guard-{uuid.uuid4().hex[:10]}",
    )


@pytest.fixture
def engine(settings: Settings) -> Engine:
    eng = open_store(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def client(settings: Settings) -> Any:
    return mlflow_client(settings)


def ingest(settings: Settings, engine: Engine, weeks: int) -> None:
    feed.replay(settings, weeks=weeks)
    report = ingest_landing(settings, engine=engine)
    assert len(report.accepted) == weeks


def newest_cutoff(settings: Settings, engine: Engine) -> date:
    return parse_iso_week(ingested_weeks(settings, engine=engine)[-1])


def evaluation_cutoff(settings: Settings, engine: Engine) -> date:
    """The evaluation cutoff a training run would use: newest Monday whose label has matured."""
    return newest_cutoff(settings, engine) - timedelta(days=settings.horizon_days)


def train_version(
    settings: Settings, engine: Engine, client: Any, *, shuffle: bool = False, n_fit: int = 4
) -> str:
    """Train a small real XGBoost model on the warehouse, log it with ``mlflow.xgboost`` and register
    it as a candidate tagged with its evaluation cutoff. ``shuffle`` permutes the labels (a model
    that learned nothing, standing in for a broken training run)."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    tx = load_records(settings, engine=engine)
    evaluation = evaluation_cutoff(settings, engine)
    cutoffs = [evaluation - timedelta(weeks=4 + k) for k in range(n_fit)]
    fit = stack_rows(USECASE, tx, cutoffs)
    x = fit.loc[:, list(FEATURE_COLUMNS)].astype("float64")
    y = fit[LABEL].to_numpy(dtype=np.int64)
    if shuffle:
        y = np.random.default_rng(0).permutation(y)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 2, "seed": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=40,
    )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment("rollguard-guard-tests")
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(x.head(), booster.predict(xgb.DMatrix(x.head()))),
            model_format="ubj",
        )
    name = settings.model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run.info.run_id,
        model_id=info.model_id,
        tags={registry.STATUS_TAG: "candidate", EVALUATION_CUTOFF_TAG: evaluation.isoformat()},
    )
    return str(mv.version)


def gate(settings: Settings, engine: Engine, client: Any, version: str) -> registry.GateRun:
    return registry.run_gate(
        evaluation_rows(settings, engine=engine).rows,
        usecase=settings.usecase_spec,
        model_name=settings.model_name,
        policy=load_policy(settings.gate_policy_path),
        client=client,
        engine=engine,
        version=version,
    )


def score_week(settings: Settings, engine: Engine, client: Any, version: str) -> date:
    """The weekly batch scoring of ``version`` at the newest ingested cutoff."""
    cutoff = newest_cutoff(settings, engine)
    features = USECASE.build_rows(
        load_records(settings, engine=engine), cutoff, label_available=False
    )
    model = registry.load_version(client, settings.model_name, version)
    batch = score_batch(
        settings, cutoff, model_version=version, predict=model.predict, features=features
    )
    assert batch.created and batch.n_rows > 1000
    return cutoff


def audit_rows(engine: Engine, name: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(AliasAudit.__table__)
            .where(AliasAudit.model_name == name)
            .order_by(AliasAudit.id)
        ).all()


def guard_rows(engine: Engine, name: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(GuardCheckRow.__table__)
            .where(GuardCheckRow.model_name == name)
            .order_by(GuardCheckRow.id)
        ).all()


def test_healthy_champion_stays_and_realized_quality_waits_for_labels(
    settings: Settings, engine: Engine, client: Any
) -> None:
    name = settings.model_name
    ingest(settings, engine, 20)
    first = train_version(settings, engine, client)
    assert gate(settings, engine, client, first).decision.outcome == "bootstrap"
    second = train_version(settings, engine, client, n_fit=6)
    run = gate(settings, engine, client, second)
    assert run.decision.outcome == "promote", run.decision.reasons
    scored = score_week(settings, engine, client, second)

    # (c) Labels of the scored week have not matured yet; the shift is ok.
    early = check_champion(settings, client=client, engine=engine)
    assert (early.champion_version, early.reference_version, early.previous_version) == (
        second,
        second,
        first,
    )
    assert early.cutoff == scored.isoformat()
    shift = early.report.check("score_shift")
    assert shift.verdict == "ok" and shift.value < 1.0 and shift.n_rows > 1000, shift
    # The scored week's labels have not matured: the realized check uses the newest matured
    # cutoff (the evaluation cutoff), re-scoring the champion there.
    realized = early.report.check("realized_quality")
    assert early.report.realized_cutoff != scored.isoformat()
    assert realized.verdict in ("ok", "inconclusive"), realized.detail
    assert early.state == "ok" and early.rollback is None

    # Four more weeks arrive (not scored yet): the label of the scored week has matured.
    ingest(settings, engine, 4)
    later = check_champion(settings, client=client, engine=engine)
    assert later.cutoff == scored.isoformat()
    assert later.report.realized_cutoff >= scored.isoformat()
    realized = later.report.check("realized_quality")
    assert realized.verdict in ("ok", "inconclusive"), realized.detail
    assert realized.n_rows > 2000 and realized.ci_low is not None
    assert later.state in ("ok", "inconclusive") and later.rollback is None, later.reason

    # (a) Nothing moved: the champion is the promoted version, no rollback was attempted.
    assert registry.read_pointer(engine, name) == second
    assert registry.alias_version(client, name, registry.CHAMPION) == second
    assert [r.action for r in audit_rows(engine, name)] == ["bootstrap", "promote"]
    rows = guard_rows(engine, name)
    assert [r.rolled_back_to for r in rows] == [None, None]
    assert latest_guard_state(engine, name) == later.state


def test_broken_champion_forced_past_the_gate_is_rolled_back_once(
    settings: Settings, engine: Engine, client: Any
) -> None:
    name = settings.model_name
    ingest(settings, engine, 24)
    good = train_version(settings, engine, client)
    assert gate(settings, engine, client, good).decision.outcome == "bootstrap"
    score_week(settings, engine, client, good)
    broken = train_version(settings, engine, client, shuffle=True)
    registry.move_champion(
        name,
        broken,
        expected=good,
        actor="human",
        reason="forced past the gate",
        client=client,
        engine=engine,
    )
    cutoff = score_week(settings, engine, client, broken)

    # A dry run sees the damage and moves nothing.
    dry = check_champion(settings, client=client, engine=engine, act=False)
    assert dry.state == "degraded" and dry.rollback is None
    assert dry.rollback_refused is not None and "dry run" in dry.rollback_refused
    assert registry.read_pointer(engine, name) == broken

    result = check_champion(settings, client=client, engine=engine)
    # The score shift compares the broken model with itself at gate time: consistent, so ok. The
    # realized check re-scores it on the newest matured cutoff against the version it replaced.
    assert (result.reference_version, result.previous_version) == (broken, good)
    assert result.report.check("score_shift").verdict == "ok"
    realized = result.report.check("realized_quality")
    assert realized.verdict == "degraded" and realized.ci_high < -0.01, realized
    assert result.state == "degraded"
    assert result.rollback is not None and not result.rollback.replayed
    assert (result.rollback.from_version, result.rollback.to_version) == (broken, good)

    assert registry.read_pointer(engine, name) == good
    assert registry.alias_version(client, name, registry.CHAMPION) == good
    assert registry.version_status(client.get_model_version(name, broken)) == "rolled_back"
    rollbacks = [r for r in audit_rows(engine, name) if r.action == "rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0].actor == "guard" and rollbacks[0].outcome == "moved"
    assert rollbacks[0].fingerprint == f"guard:{name}:{broken}:{cutoff.isoformat()}"
    row = guard_rows(engine, name)[-1]
    assert (row.state, row.rolled_back_to, row.champion_version) == ("degraded", good, broken)
    assert latest_guard_state(engine, name) == "degraded"

    # A second check looks at the restored champion and changes nothing.
    again = check_champion(settings, client=client, engine=engine)
    assert again.champion_version == good and again.rollback is None
    assert again.state in ("ok", "inconclusive")
    assert registry.read_pointer(engine, name) == good
    assert len([r for r in audit_rows(engine, name) if r.action == "rollback"]) == 1
    assert latest_guard_state(engine, name) == again.state


def test_replayed_check_of_the_same_cutoff_does_not_roll_back_twice(
    settings: Settings, engine: Engine, client: Any
) -> None:
    """A human forces the rolled-back version back for the same week: the guard's rollback for that
    version and cutoff was already made, so the fingerprint replays it and nothing moves again."""
    name = settings.model_name
    ingest(settings, engine, 24)
    good = train_version(settings, engine, client)
    gate(settings, engine, client, good)
    broken = train_version(settings, engine, client, shuffle=True)
    registry.move_champion(
        name, broken, expected=good, actor="human", reason="forced", client=client, engine=engine
    )
    score_week(settings, engine, client, broken)
    assert check_champion(settings, client=client, engine=engine).rollback is not None
    registry.move_champion(
        name, broken, expected=good, actor="human", reason="again", client=client, engine=engine
    )
    replay = check_champion(settings, client=client, engine=engine)
    assert replay.state == "degraded"
    assert replay.rollback is not None and replay.rollback.replayed
    assert "already" in replay.reason
    assert guard_rows(engine, name)[-1].rolled_back_to is None
    assert registry.read_pointer(engine, name) == broken  # the human's choice for this week stands
    assert len([r for r in audit_rows(engine, name) if r.action == "rollback"]) == 1


# --- regression: the hotel use case --------------------------------------------------------------
@pytest.fixture
def hotel_settings(tmp_path: Path, mlflow_server: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        home=tmp_path / "hotel-home",
        env="test",
        _env_file=None,
        mlflow_tracking_uri=mlflow_server,
        model_name=f"guard-hotel-{uuid.uuid4().hex[:10]}",
        usecase="hotel",
    )


def train_hotel_version(settings: Settings, *, shuffle: bool = False) -> str:
    """Train the use case's model on a short plan (8 fit cutoffs), targets permuted when
    ``shuffle``, log it as the pipeline does and register it as a candidate tagged with its pooled
    evaluation cutoffs."""
    from domain.evaluation import TrainingSet, build_training_set, load_training_inputs
    from domain.evaluation import plan_cutoffs as plan_of
    from pipeline import tracking, training

    usecase = settings.usecase_spec
    inputs = load_training_inputs(settings)
    plan = plan_of(usecase, inputs.weeks, n_fit=8, n_validation=1)
    data = build_training_set(usecase, inputs.records, plan)
    if shuffle:
        label, rng = usecase.label.column, np.random.default_rng(7)
        data = TrainingSet(
            plan=data.plan,
            fit=data.fit.assign(**{label: rng.permutation(data.fit[label].to_numpy())}),
            validation=data.validation.assign(
                **{label: rng.permutation(data.validation[label].to_numpy())}
            ),
            evaluation=data.evaluation,
            dataset_sha256=data.dataset_sha256,
        )
    model = training.train_model(usecase, data, training.TrainingConfig.from_settings(settings))
    client = tracking.settings_client(settings)
    experiment = tracking.ensure_experiment(
        client, tracking_uri=client.tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    run = client.create_run(experiment)
    uri = tracking.log_model(
        usecase,
        model.booster,
        data.evaluation.head(50),
        run_id=run.info.run_id,
        tracking_uri=client.tracking_uri,
    )
    tags = {
        registry.STATUS_TAG: "candidate",
        EVALUATION_CUTOFF_TAG: plan.evaluation.isoformat(),
        EVALUATION_POOL_TAG: ",".join(c.isoformat() for c in plan.evaluations),
    }
    version = tracking.register_version(
        uri,
        model_name=settings.model_name,
        run_id=run.info.run_id,
        client=client,
        tracking_uri=client.tracking_uri,
        tags=tags,
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return str(version.version)


def test_hotel_gate_rejects_a_shuffled_target_model_and_the_guard_rolls_it_back(
    hotel_settings: Settings,
) -> None:
    settings = hotel_settings
    engine = open_store(settings)
    client = mlflow_client(settings)
    usecase = settings.usecase_spec
    name = settings.model_name
    ingest(settings, engine, 24)
    good = train_hotel_version(settings)
    first = gate(settings, engine, client, good)
    assert first.decision.outcome == "bootstrap", first.decision.reasons
    assert first.decision.task == "regression" and first.decision.unit == "EUR"
    broken = train_hotel_version(settings, shuffle=True)
    run = gate(settings, engine, client, broken)
    assert run.decision.outcome == "reject"
    primary = run.decision.check("primary_non_inferiority")
    assert primary.verdict == "fail" and "EUR" in primary.detail, primary
    assert any(r.startswith("MAE may be worse") for r in run.decision.reasons)

    registry.move_champion(
        name, broken, expected=good, actor="human", reason="forced", client=client, engine=engine
    )
    cutoff = newest_cutoff(settings, engine)
    rows = usecase.build_rows(load_records(settings, engine=engine), cutoff, label_available=False)
    model = registry.load_version(client, name, broken)
    score_batch(settings, cutoff, model_version=broken, predict=model.predict, features=rows)

    result = check_champion(settings, client=client, engine=engine)
    realized = result.report.check("realized_quality")
    # the gate's pooled evaluation cutoffs are out of time for the champion: judged at once
    assert realized.n_rows >= 500 and realized.n_positives is None, realized
    assert realized.verdict == "degraded" and realized.ci_low > 0.05, realized
    assert result.report.check("score_shift").verdict in ("inconclusive", "ok")
    assert result.state == "degraded"
    assert result.rollback is not None
    assert (result.rollback.from_version, result.rollback.to_version) == (broken, good)
    assert registry.read_pointer(engine, name) == good
    engine.dispose()
