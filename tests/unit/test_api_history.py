"""The read-only routes the UI needs (in-process TestClient, real booster, real warehouse built
by the real replay + ingestion + snapshot steps): the customer's place in this week's targeted
group, purchase history, and recent champion alias moves."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.model import ServingModel, load_model_dir
from domain import snapshots
from domain.scoring import score_frame
from pipeline import feed, ingest
from rollguard.db.models import AliasAudit
from rollguard.settings import Settings
from rollguard.store import open_store
from tests.support.api_models import save_mlflow_model, train_booster
from tests.unit.test_api import make_client, make_settings
from usecases.cdnow import USECASE as CDNOW
from usecases.cdnow.features import FEATURE_COLUMNS

CUTOFF = date(1997, 3, 31)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    path = save_mlflow_model(train_booster(seed=3), tmp_path_factory.mktemp("m") / "model")
    return load_model_dir(path, name="cdnow-repurchase", version="4", tags={})


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with 13 weeks of CDNOW replayed, ingested and snapshotted at 1997-03-31."""
    home = tmp_path_factory.mktemp("wh") / "home"
    s = Settings(home=home, env="test", _env_file=None)  # type: ignore[call-arg]
    feed.replay(s, until=CUTOFF - timedelta(days=1))
    ingest.ingest_landing(s)
    snapshots.build_snapshot(s, CUTOFF)
    return home


@pytest.fixture
def client(warehouse: Path, model: ServingModel):
    with make_client(make_settings(warehouse, targeting_budget=0.1), model) as c:
        yield c


def test_customer_prediction_says_rank_and_targeted_as_the_weekly_batch_does(
    client: TestClient, warehouse: Path, model: ServingModel
) -> None:
    frame = pd.read_parquet(warehouse / "warehouse" / "features" / f"cutoff={CUTOFF}.parquet")
    expected = score_frame(
        CDNOW,
        frame,
        lambda x: model.predict(x.loc[:, list(model.feature_names)].to_numpy(np.float32)),
        0.1,
    ).set_index("customer_id")
    n_targeted = math.ceil(0.1 * len(frame))
    top = int(expected["rank"].idxmin())
    last_in = int(expected.index[expected["rank"] == n_targeted][0])
    first_out = int(expected.index[expected["rank"] == n_targeted + 1][0])
    for cid, targeted in ((top, True), (last_in, True), (first_out, False)):
        body = client.get(f"/v1/customers/{cid}/prediction").json()
        assert body["rank"] == int(expected.loc[cid, "rank"])
        assert body["targeted"] is targeted
        assert body["n_customers"] == len(frame) and body["n_targeted"] == n_targeted
        assert body["targeting_budget"] == 0.1
        assert body["scores"][0] == pytest.approx(expected.loc[cid, "score"])
    assert client.get(f"/v1/customers/{top}/prediction").json()["rank"] == 1


def test_customer_history_lists_the_accepted_purchases_newest_first(
    client: TestClient,
) -> None:
    from usecases.cdnow.source import load_dataset

    transactions, _, _ = load_dataset()
    before = transactions[transactions["date"] < pd.Timestamp(CUTOFF)]
    counts = before.groupby("customer_id").size()
    cid = int(counts[counts >= 3].index[0])
    mine = before[before["customer_id"] == cid].sort_values(["date", "transaction_id"])

    body = client.get(f"/v1/customers/{cid}/history").json()
    assert body["customer_id"] == cid
    assert body["n_records"] == len(mine)
    assert body["totals"]["dollar_value"] == pytest.approx(round(mine["dollar_value"].sum(), 2))
    assert body["totals"]["number_of_cds"] == int(mine["number_of_cds"].sum())
    assert set(body["totals"]) == {"dollar_value", "number_of_cds"}  # not the ids
    assert body["first"] == mine["date"].iloc[0].date().isoformat()
    assert body["last"] == mine["date"].iloc[-1].date().isoformat()
    dates = [p["date"] for p in body["records"]]
    assert dates == sorted(dates, reverse=True) and len(dates) == len(mine)
    newest = mine.iloc[-1]
    assert body["records"][0]["transaction_id"] == int(newest["transaction_id"])
    assert body["records"][0]["number_of_cds"] == int(newest["number_of_cds"])

    limited = client.get(f"/v1/customers/{cid}/history", params={"limit": 2}).json()
    assert len(limited["records"]) == 2 and limited["n_records"] == len(mine)
    assert limited["records"] == body["records"][:2]


def test_customer_history_errors_name_the_problem(client: TestClient) -> None:
    unknown = client.get("/v1/customers/99999999/history")
    assert unknown.status_code == 404
    assert unknown.json()["details"] == [
        {"field": "customer_id", "problem": "no record in the warehouse"}
    ]
    bad = client.get("/v1/customers/1/history", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "limit"


def _audit(engine, model_name: str = "cdnow-repurchase", **kw: object) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        session.add(AliasAudit(model_name=model_name, alias="champion", **kw))
        session.commit()


def test_model_history_lists_alias_moves_newest_first_with_reasons(
    client: TestClient, warehouse: Path
) -> None:
    assert client.get("/v1/model/history").json() == {
        "model_name": "cdnow-repurchase",
        "moves": [],
    }
    engine = open_store(make_settings(warehouse))
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    _audit(
        engine,
        action="bootstrap",
        outcome="moved",
        from_version=None,
        to_version="1",
        actor="pipeline",
        reason="first model",
        evidence=json.dumps({"gate": {"outcome": "bootstrap"}}),
        moved_at=t0,
    )
    _audit(
        engine,
        action="rollback",
        outcome="moved",
        from_version="2",
        to_version="1",
        actor="guard",
        reason="live average precision below the gate expectation",
        evidence=json.dumps({"fingerprint": "abc"}),
        fingerprint="abc",
        moved_at=t0 + timedelta(hours=1),
    )
    _audit(
        engine,
        action="promote",
        outcome="moved",
        from_version="1",
        to_version="2",
        actor="pipeline",
        reason="gate: promote",
        evidence="{}",
        moved_at=t0 + timedelta(minutes=30),
    )
    _audit(  # another model: never shown
        engine,
        model_name="another-model",
        action="promote",
        outcome="moved",
        from_version="1",
        to_version="9",
        actor="human",
        reason="x",
        evidence="{}",
        moved_at=t0,
    )
    body = client.get("/v1/model/history").json()
    assert [m["action"] for m in body["moves"]] == ["rollback", "promote", "bootstrap"]
    rollback = body["moves"][0]
    assert rollback["reason"] == "live average precision below the gate expectation"
    assert rollback["actor"] == "guard" and rollback["evidence"] == {"fingerprint": "abc"}
    assert rollback["from_version"] == "2" and rollback["to_version"] == "1"
    assert datetime.fromisoformat(rollback["moved_at"]) == t0 + timedelta(hours=1)
    assert len(client.get("/v1/model/history", params={"limit": 1}).json()["moves"]) == 1
    assert client.get("/v1/model/history", params={"limit": 500}).status_code == 422


def test_history_routes_answer_503_when_the_store_is_down(home: Path, model: ServingModel) -> None:
    from tests.support.servers import free_port

    settings = make_settings(
        home, database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    )
    with make_client(settings, model) as c:
        for path in ("/v1/model/history", "/v1/customers/1/history"):
            resp = c.get(path)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "store_unavailable"
            assert "monitoring store" in resp.json()["message"]
    assert set(FEATURE_COLUMNS)  # the contract module imports without the pipeline group


def test_model_info_reads_the_registry_tags_the_gate_writes(home: Path, tmp_path: Path) -> None:
    path = save_mlflow_model(train_booster(seed=2, rounds=3), tmp_path / "model")
    tagged = load_model_dir(
        path,
        name="cdnow-repurchase",
        version="5",
        tags={
            "rollguard.status": "champion",
            "rollguard.gate_decision": "promote",
            "rollguard.gate_reasons": "non_inferior: AP difference CI above -0.01",
            "rollguard.dataset_sha256": "abc",
        },
    )
    with make_client(make_settings(home), tagged) as c:
        info = c.get("/v1/model").json()
    assert info["status"] == "champion"
    assert info["gate"] == {
        "rollguard.gate_decision": "promote",
        "rollguard.gate_reasons": "non_inferior: AP difference CI above -0.01",
    }
    assert info["lineage"] == {"rollguard.dataset_sha256": "abc"}
