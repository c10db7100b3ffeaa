"""Promotion, rollback and alias history against a real MLflow tracking server on loopback, with
the monitoring store on SQLite and on PostgreSQL. Models are real tiny XGBoost boosters."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, select

from registry_guard import registry
from registry_guard.registry import (
    AliasTargetMissing,
    ChampionMoved,
    RollbackRefused,
    history,
    move_champion,
    read_pointer,
    rollback,
)
from rollguard import db
from rollguard.db.models import AliasAudit
from usecases.cdnow import USECASE
from usecases.cdnow.features import FEATURE_COLUMNS


def train_booster(seed: int, signal: float, n: int = 3000) -> tuple[Any, pd.DataFrame]:
    """A tiny XGBoost booster on synthetic rows with the served feature names."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.gamma(2.0, 10.0, (n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    logit = signal * (x["frequency"] - 20) / 10 - 1.5 + rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": seed},
        xgb.DMatrix(x, label=y),
        num_boost_round=5,
    )
    return booster, x


@pytest.fixture(scope="session")
def tracking(mlflow_server: str) -> dict[str, Any]:
    """One logged model on the server (reused as the source of many registry versions)."""
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("rollguard-registry-tests")
    booster, x = train_booster(1, 1.0)
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(
                x.head(), booster.predict(__import__("xgboost").DMatrix(x.head()))
            ),
            input_example=x.head(2),
            model_format="ubj",
        )
    return {
        "uri": mlflow_server,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "run_id": run.info.run_id,
    }


@pytest.fixture
def client(tracking: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking["uri"])


def register_versions(
    client: Any, tracking: dict[str, Any], count: int, statuses: dict[int, str] | None = None
) -> str:
    """A fresh registered model with ``count`` versions (1..count) of the logged model."""
    name = f"rg-test-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for v in range(1, count + 1):
        client.create_model_version(
            name,
            source=tracking["model_uri"],
            run_id=tracking["run_id"],
            model_id=tracking["model_id"],
            tags={registry.STATUS_TAG: (statuses or {}).get(v, "candidate")},
        )
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """The migrated monitoring store, on SQLite (file under a temporary home) or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'home' / 'monitoring.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db.upgrade(url)
    eng = db.make_engine(url)
    yield eng
    eng.dispose()


def status(client: Any, name: str, version: str) -> str | None:
    return registry.version_status(client.get_model_version(name, version))


def assert_consistent(client: Any, engine: Engine, name: str) -> list[Any]:
    """The audit log, the pointer and the MLflow alias agree; the chain of moves is unbroken."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AliasAudit.__table__)
            .where(AliasAudit.model_name == name)
            .order_by(AliasAudit.id)
        ).all()
    moved = [r for r in rows if r.outcome == "moved"]
    for before, after in zip(moved, moved[1:], strict=False):
        assert after.from_version == before.to_version, "a lost update broke the chain"
    final = moved[-1].to_version if moved else None
    assert read_pointer(engine, name) == final
    assert registry.alias_version(client, name, registry.CHAMPION) == final
    return rows


def test_bootstrap_promote_and_history(client: Any, tracking: dict, engine: Engine) -> None:
    name = register_versions(client, tracking, 2)
    first = move_champion(
        name, "1", expected=None, actor="pipeline", reason="first", client=client, engine=engine
    )
    assert first.action == "bootstrap" and first.to_version == "1"
    move = move_champion(
        name,
        "2",
        expected="1",
        actor="pipeline",
        reason="gate promote",
        evidence={"gate": {"outcome": "promote"}},
        client=client,
        engine=engine,
    )
    assert (move.from_version, move.to_version) == ("1", "2")
    assert status(client, name, "2") == "champion" and status(client, name, "1") == "retired"
    with pytest.raises(ChampionMoved, match="expected 1"):
        move_champion(
            name, "1", expected="1", actor="human", reason="stale", client=client, engine=engine
        )
    rows = history(engine, name)
    assert [r.outcome for r in rows] == ["refused", "moved", "moved"]  # newest first
    assert rows[1].evidence == {"gate": {"outcome": "promote"}}
    assert_consistent(client, engine, name)


def race_promotion_against_rollback(
    client: Any, tracking: dict, engine: Engine, fingerprint: str
) -> tuple[str, dict[str, Any]]:
    """Champion 2 (after 1); at once: promote 3 expecting 2, and roll back 2."""
    name = register_versions(client, tracking, 3)
    move_champion(
        name, "1", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    move_champion(
        name, "2", expected="1", actor="pipeline", reason="r", client=client, engine=engine
    )
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def promote() -> None:
        barrier.wait()
        try:
            results["promote"] = move_champion(
                name,
                "3",
                expected="2",
                actor="pipeline",
                reason="gate",
                client=client,
                engine=engine,
            )
        except ChampionMoved as exc:
            results["promote"] = exc

    def roll_back() -> None:
        barrier.wait()
        try:
            results["rollback"] = rollback(
                "live AP dropped",
                "guard",
                fingerprint=fingerprint,
                model_name=name,
                expected="2",
                cooldown_seconds=0,
                client=client,
                engine=engine,
            )
        except ChampionMoved as exc:
            results["rollback"] = exc

    threads = [threading.Thread(target=promote), threading.Thread(target=roll_back)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return name, results


def test_promotion_racing_a_rollback_leaves_one_outcome_and_two_audit_rows(
    client: Any, tracking: dict, engine: Engine
) -> None:
    for round_ in range(3):
        name, results = race_promotion_against_rollback(client, tracking, engine, f"fp-{round_}")
        errors = [v for v in results.values() if isinstance(v, ChampionMoved)]
        assert len(errors) == 1, results
        rows = assert_consistent(client, engine, name)
        assert len(rows) == 4 and [r.outcome for r in rows[2:]].count("refused") == 1
        final = read_pointer(engine, name)
        assert final in {"1", "3"}
        if final == "1":
            assert status(client, name, "2") == "rolled_back"


def test_many_threads_never_lose_an_update(client: Any, tracking: dict, engine: Engine) -> None:
    name = register_versions(client, tracking, 6, statuses={v: "retired" for v in range(1, 7)})
    move_champion(
        name, "1", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(3):
            try:
                if (i + j) % 3 == 0:
                    rollback(
                        "guard",
                        "guard",
                        model_name=name,
                        cooldown_seconds=0,
                        client=client,
                        engine=engine,
                    )
                else:
                    current = read_pointer(engine, name)
                    move_champion(
                        name,
                        str((i + j) % 6 + 1),
                        expected=current,
                        actor="pipeline",
                        reason=f"w{i}",
                        client=client,
                        engine=engine,
                    )
            except (ChampionMoved, RollbackRefused):
                pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    rows = assert_consistent(client, engine, name)
    assert len(rows) == 1 + 18  # every attempt is audited, moved or refused


def test_rollback_skips_rejected_and_rolled_back_and_never_deletes(
    client: Any, tracking: dict, engine: Engine
) -> None:
    name = register_versions(
        client, tracking, 5, statuses={1: "retired", 2: "rolled_back", 3: "rejected", 4: "retired"}
    )
    move_champion(
        name, "4", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    move_champion(
        name, "5", expected="4", actor="pipeline", reason="r", client=client, engine=engine
    )
    move = rollback(
        "bad", "guard", model_name=name, cooldown_seconds=0, client=client, engine=engine
    )
    assert (move.from_version, move.to_version) == ("5", "4")
    assert status(client, name, "5") == "rolled_back"
    move = rollback(
        "bad again", "guard", model_name=name, cooldown_seconds=0, client=client, engine=engine
    )
    assert move.to_version == "1"  # 3 is rejected, 2 rolled back
    with pytest.raises(RollbackRefused, match="no version below 1"):
        rollback(
            "worse", "guard", model_name=name, cooldown_seconds=0, client=client, engine=engine
        )
    assert len(registry.list_versions(client, name)) == 5
    with pytest.raises(RollbackRefused, match="version 5 is rolled_back; .* --force"):
        rollback(
            "human picks",
            "human",
            to="5",
            model_name=name,
            cooldown_seconds=0,
            client=client,
            engine=engine,
        )
    named = rollback(
        "human picks, deliberately",
        "human",
        to="5",
        model_name=name,
        cooldown_seconds=0,
        client=client,
        engine=engine,
        force=True,
    )
    assert named.to_version == "5"
    assert_consistent(client, engine, name)


def test_rollback_cooldown_and_fingerprint_idempotence(
    client: Any, tracking: dict, engine: Engine
) -> None:
    name = register_versions(client, tracking, 3, statuses={1: "retired", 2: "retired"})
    for v, expected in (("1", None), ("2", "1"), ("3", "2")):
        move_champion(
            name, v, expected=expected, actor="pipeline", reason="r", client=client, engine=engine
        )
    t0 = datetime.now(UTC)
    first = rollback(
        "alert",
        "alert",
        fingerprint="abc",
        model_name=name,
        cooldown_seconds=600,
        client=client,
        engine=engine,
        now=t0,
    )
    assert (first.from_version, first.to_version) == ("3", "2")
    again = rollback(
        "alert",
        "alert",
        fingerprint="abc",
        model_name=name,
        cooldown_seconds=600,
        client=client,
        engine=engine,
        now=t0 + timedelta(seconds=5),
    )
    assert again.replayed and again.id == first.id and read_pointer(engine, name) == "2"
    with pytest.raises(RollbackRefused, match="cooldown"):
        rollback(
            "other alert",
            "alert",
            fingerprint="def",
            model_name=name,
            cooldown_seconds=600,
            client=client,
            engine=engine,
            now=t0 + timedelta(seconds=60),
        )
    assert read_pointer(engine, name) == "2"
    later = rollback(
        "other alert",
        "alert",
        fingerprint="def",
        model_name=name,
        cooldown_seconds=600,
        client=client,
        engine=engine,
        now=t0 + timedelta(seconds=601),
    )
    assert (later.from_version, later.to_version) == ("2", "1")
    assert_consistent(client, engine, name)


def test_deleted_version_behind_the_alias_is_a_clear_error(
    client: Any, tracking: dict, engine: Engine
) -> None:
    name = register_versions(client, tracking, 2, statuses={1: "retired"})
    move_champion(
        name, "1", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    move_champion(
        name, "2", expected="1", actor="pipeline", reason="r", client=client, engine=engine
    )
    client.delete_model_version(name, "2")
    for read in (
        lambda: registry.describe_models(client, engine, name),
        lambda: registry.resolve_alias(client, name, registry.CHAMPION, engine=engine),
        lambda: registry.load_version(client, name, "2", alias=registry.CHAMPION),
    ):
        with pytest.raises(AliasTargetMissing) as info:
            read()
        message = str(info.value)
        assert name in message and "'champion'" in message and "version 2" in message
    # the remedy works: roll back to the version still there
    move = rollback(
        "version lost", "human", model_name=name, cooldown_seconds=0, client=client, engine=engine
    )
    assert move.to_version == "1"
    assert registry.describe_models(client, engine, name)[0]["is_champion"]


# --- the gate end to end -------------------------------------------------------------------------
def evaluation_rows(n: int = 4000, seed: int = 99) -> pd.DataFrame:
    """Out-of-time rows from the same process the test boosters learn (signal in frequency)."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.gamma(2.0, 10.0, (n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    logit = (x["frequency"] - 20) / 10 - 1.5 + rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x.assign(
        repurchase=y,
        revenue_horizon=y * rng.gamma(2.0, 30.0, n),
        customer_type=np.where(x["frequency"] >= 2, "returning", "new"),
    )


@pytest.fixture(scope="session")
def noise_model(tracking: dict[str, Any]) -> dict[str, Any]:
    """A logged booster trained on labels without signal (a clearly worse challenger)."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    booster, x = train_booster(5, 0.0)
    with mlflow.start_run() as run:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(x.head(), booster.predict(xgb.DMatrix(x.head()))),
            input_example=x.head(2),
            model_format="ubj",
        )
    return {"model_uri": info.model_uri, "model_id": info.model_id, "run_id": run.info.run_id}


def add_version(client: Any, name: str, logged: dict[str, Any]) -> str:
    mv = client.create_model_version(
        name,
        source=logged["model_uri"],
        run_id=logged["run_id"],
        model_id=logged["model_id"],
        tags={registry.STATUS_TAG: "candidate"},
    )
    client.set_registered_model_alias(name, registry.CHALLENGER, mv.version)
    return str(mv.version)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_gate_bootstraps_rejects_and_promotes(
    client: Any, tracking: dict, noise_model: dict, engine: Engine
) -> None:
    from registry_guard.policy import GatePolicy
    from rollguard.db.models import GateDecisionRow

    name = f"rg-gate-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    frame = evaluation_rows()
    kw = dict(
        model_name=name,
        policy=GatePolicy(),
        client=client,
        engine=engine,
        usecase=USECASE,
    )

    add_version(client, name, tracking)
    first = registry.run_gate(frame, **kw)
    assert first.decision.outcome == "bootstrap" and first.move is not None
    size = first.decision.check("model_size")
    assert size.verdict == "pass" and 0 < size.value < 1_000_000  # the .ubj file of a tiny booster
    assert read_pointer(engine, name) == "1" == registry.alias_version(client, name, "champion")
    logged = {a.path for a in client.list_artifacts(tracking["run_id"], "gate")}
    assert logged == {"gate/gate_report.json", "gate/gate_report.md"}

    add_version(client, name, noise_model)
    worse = registry.run_gate(frame, **kw, actor="human", reason="operator wants v2")
    assert worse.decision.outcome == "reject" and worse.move is None
    (refusal,) = registry.history(engine, name, limit=1)
    assert (refusal.outcome, refusal.action, refusal.actor) == ("refused", "promote", "human")
    assert refusal.reason.startswith("operator wants v2; gate reject: ")
    assert worse.decision.check("guardrail_latency").verdict in {"pass", "skip"}
    mv = client.get_model_version(name, "2")
    assert mv.tags[registry.STATUS_TAG] == "rejected"
    assert mv.tags[registry.DECISION_TAG] == "reject"
    assert read_pointer(engine, name) == "1"

    add_version(client, name, tracking)  # the same model again: non-inferior, the fresher wins
    same = registry.run_gate(frame, **kw, reason="weekly retrain")
    assert same.decision.outcome == "promote", same.decision.reasons
    assert (same.move.from_version, same.move.to_version) == ("1", "3")
    assert same.move.reason.startswith("weekly retrain; gate promote: ")
    assert same.move.evidence["gate"]["outcome"] == "promote"
    rates = same.decision.to_dict()["measured_error_rates"]  # the shipped measurements, cdnow
    assert rates["status"] == "measured", rates
    assert any("worse by the margin" in s for s in rates["sentences"])
    assert same.move.evidence["gate"]["measured_error_rates"] == rates
    with engine.connect() as conn:
        outcomes = (
            conn.execute(
                select(GateDecisionRow.outcome)
                .where(GateDecisionRow.model_name == name)
                .order_by(GateDecisionRow.id)
            )
            .scalars()
            .all()
        )
    assert outcomes == ["bootstrap", "reject", "promote"]
    assert_consistent(client, engine, name)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_gate_reports_a_champion_that_cannot_be_loaded(
    client: Any, tracking: dict, engine: Engine
) -> None:
    from registry_guard.policy import GatePolicy

    name = register_versions(client, tracking, 2)
    move_champion(
        name, "1", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    client.delete_model_version(name, "1")
    run = registry.run_gate(
        evaluation_rows(),
        model_name=name,
        policy=GatePolicy(),
        client=client,
        engine=engine,
        usecase=USECASE,
        version="2",
    )
    assert run.decision.outcome == "reject"
    assert run.decision.reason_code == "champion_unavailable"
    assert "AliasTargetMissing" in run.decision.reasons[0]
    assert status(client, name, "2") == "candidate"  # not the challenger's fault


# --- the command line ------------------------------------------------------------------------------
def test_cli_models_promote_history_rollback_and_gate(
    client: Any, tracking: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from registry_guard import cli as guard_cli
    from rollguard.settings import get_settings

    name = register_versions(client, tracking, 2, statuses={1: "retired"})
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking["uri"])
    monkeypatch.setenv("ROLLGUARD_MODEL_NAME", name)
    monkeypatch.setenv("ROLLGUARD_ROLLBACK_COOLDOWN_SECONDS", "0")
    get_settings.cache_clear()
    app = typer.Typer()
    guard_cli.register(app)
    runner = CliRunner()

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json"])
        return json.loads(result.output)

    try:
        assert [v["version"] for v in run("models")["versions"]] == ["2", "1"]
        for version in ("1", "2"):
            moved = run("promote", version, "--reason", "operator", "--force")
            assert moved["to_version"] == version and moved["actor"] == "human"
        back = run("rollback", "--reason", "bad outputs")
        assert (back["from_version"], back["to_version"]) == ("2", "1")
        listed = {v["version"]: v for v in run("models")["versions"]}
        assert "champion" in listed["1"]["aliases"] and listed["1"]["is_champion"]
        assert "champion" not in listed["2"]["aliases"]
        moves = run("history")["history"]
        assert [m["action"] for m in moves] == ["rollback", "promote", "bootstrap"]
        gate = run("gate")
        assert gate["kind"] == "no_evaluation_data"
        assert gate["error"].startswith(guard_cli.NO_EVALUATION)
        bad = runner.invoke(app, ["rollback", "--reason", "x", "--to", "9", "--json"])
        assert bad.exit_code == 2 and "has no version 9" in bad.output
        refused = runner.invoke(app, ["rollback", "--reason", "x", "--to", "2", "--json"])
        assert refused.exit_code == 2
        assert json.loads(refused.output)["kind"] == "registry"
        assert "rolled_back" in json.loads(refused.output)["error"]
        audit = run("history")["history"][0]
        assert (audit["outcome"], audit["to_version"]) == ("refused", "2")
    finally:
        get_settings.cache_clear()


def test_gate_inputs_derive_from_the_use_case() -> None:
    rows = evaluation_rows(50).assign(label_available=True)
    rows.loc[:9, "label_available"] = False  # not matured: left out
    inputs = registry.gate_inputs(rows, USECASE)
    assert list(inputs.features.columns) == list(FEATURE_COLUMNS)
    assert inputs.labels.dtype == np.int64 and inputs.labels.shape == (40,)
    assert inputs.values.tolist() == rows["revenue_horizon"].iloc[10:].tolist()
    assert set(inputs.slices) == {"customer_type"}
    assert set(inputs.slices["customer_type"]) <= {"new", "returning"}
    with pytest.raises(registry.RegistryError, match="customer_type"):
        registry.gate_inputs(rows.drop(columns="customer_type"), USECASE)


def test_gate_rows_without_ingested_data_is_no_evaluation_data(settings: Any) -> None:
    from registry_guard.cli import NO_EVALUATION, NoEvaluationData, gate_rows

    with pytest.raises(NoEvaluationData, match=NO_EVALUATION):
        gate_rows(settings)


# --- live score references (issue 19) ---------------------------------------------------------------
@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_forced_promotion_copies_the_champions_reference_and_restores_it_when_refused(
    client: Any, tracking: dict, engine: Engine
) -> None:
    from domain.live_profile import SCORE_REFERENCE_TAG, score_reference

    name = register_versions(client, tracking, 3)
    move_champion(
        name, "1", expected=None, actor="pipeline", reason="r", client=client, engine=engine
    )
    gated = score_reference(np.linspace(0.0, 1.0, 200), version="1")
    registry.tag_score_reference(client, name, "1", gated)
    own = score_reference(np.linspace(0.2, 0.4, 50), version="3")
    registry.tag_score_reference(client, name, "3", own)

    # A stale expectation: refused, and version 3 keeps its own reference.
    with pytest.raises(registry.ChampionMoved):
        registry.force_promote(name, "3", expected="2", reason="r", client=client, engine=engine)
    assert registry.read_score_reference(client, name, "3") == own
    # Version 2 had none: refused, and it still has none.
    with pytest.raises(registry.ChampionMoved):
        registry.force_promote(name, "2", expected="3", reason="r", client=client, engine=engine)
    assert SCORE_REFERENCE_TAG not in client.get_model_version(name, "2").tags

    move = registry.force_promote(name, "3", expected="1", reason="r", client=client, engine=engine)
    assert move.to_version == "3"
    copied = registry.read_score_reference(client, name, "3")
    assert copied is not None and copied.source == "replaced" and copied.version == "1"
    assert copied.shares == gated.shares
