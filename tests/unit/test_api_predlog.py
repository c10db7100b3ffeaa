"""The prediction log: batches reach the store; a store outage spills to the fsync-ed spool; the
spool is replayed when the store is back, idempotently (request id + row index)."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from api.metrics import ServingMetrics
from api.predlog import (
    SPOOL_FILE,
    LoggedRequest,
    PredictionLog,
    adopt_shared_spool,
    insert_records,
    to_records,
)
from rollguard import db
from rollguard.db.models import PredictionLogRow
from tests.support.api_models import EXAMPLE_ROW
from tests.support.servers import free_port


def request(n: int) -> LoggedRequest:
    return LoggedRequest(
        uuid.uuid4().hex, datetime.now(UTC), "m", "1", [dict(EXAMPLE_ROW)] * n, np.full(n, 0.25)
    )


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(PredictionLogRow)).scalar_one()


def wait_until(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def sqlite_store(path: Path) -> str:
    url = f"sqlite:///{path}"
    db.upgrade(url)
    return url


def test_store_outage_spools_then_replays_everything(tmp_path: Path) -> None:
    good = sqlite_store(tmp_path / "store.db")
    down = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    target = {"url": down}
    metrics = ServingMetrics.create()
    plog = PredictionLog(
        lambda: db.make_engine(target["url"]),
        tmp_path / "spool",
        metrics,
        flush_seconds=0.01,
        retry_seconds=0.05,
        batch_rows=7,
    )
    plog.start()
    sizes = [1, 3, 10, 2, 25]
    for n in sizes:
        plog.submit(request(n))
    # The counter moves just after each fsync: wait for both (the writer may be mid-batch).
    wait_until(
        lambda: (
            plog.spooled_rows() == sum(sizes)
            and metrics.log_spooled_rows._value.get() == sum(sizes)
        )
    )
    assert plog.status()["store_reachable"] is False

    target["url"] = good
    for n in sizes:
        plog.submit(request(n))
    wait_until(plog.idle)
    plog.stop()
    engine = db.make_engine(good)
    assert count(engine) == 2 * sum(sizes)
    assert not plog.spool_files()
    assert metrics.log_dropped_rows._value.get() == 0
    engine.dispose()


def test_a_full_queue_spills_to_the_spool_instead_of_dropping(tmp_path: Path) -> None:
    url = sqlite_store(tmp_path / "store.db")
    metrics = ServingMetrics.create()
    plog = PredictionLog(lambda: db.make_engine(url), tmp_path / "spool", metrics, max_queue_rows=5)
    plog.submit(request(4))
    plog.submit(request(4))  # over the bound: spooled on the caller's thread
    assert plog.spooled_rows() == 4
    plog.start()
    wait_until(plog.idle)
    plog.stop()
    engine = db.make_engine(url)
    assert count(engine) == 8
    engine.dispose()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=6), replays=st.integers(1, 3))
def test_replaying_a_spool_twice_changes_nothing(
    tmp_path: Path, sizes: list[int], replays: int
) -> None:
    case = tmp_path / uuid.uuid4().hex
    url = sqlite_store(case / "store.db")
    engine = db.make_engine(url)
    metrics = ServingMetrics.create()
    plog = PredictionLog(lambda: engine, case / "spool", metrics)
    records = [r for n in sizes for r in to_records(request(n))]
    plog._spool(records)
    saved = case / "copy.jsonl"
    shutil.copy(plog.spool_dir / "predictions.jsonl", saved)
    for _ in range(replays):
        shutil.copy(saved, plog.spool_dir / "predictions.jsonl")
        plog._replay(engine)
    insert_records(engine, records)  # and once more directly
    assert count(engine) == sum(sizes)
    engine.dispose()


def test_shadow_scores_are_logged_beside_the_champions() -> None:
    from api.model import ServingModel, check_features
    from tests.support.api_models import train_booster

    booster = train_booster(seed=3, rounds=3)
    challenger = ServingModel(
        name="m", version="2", booster=booster, feature_names=check_features(booster)
    )
    records = to_records(request(3), challenger)
    expected = booster.inplace_predict(challenger.to_matrix([dict(EXAMPLE_ROW)] * 3))
    assert [r["challenger_version"] for r in records] == ["2"] * 3
    np.testing.assert_allclose([r["challenger_score"] for r in records], expected, rtol=1e-6)
    assert [r["score"] for r in records] == [0.25] * 3
    # the challenger is not shadow-scored against itself
    same = to_records(request(1), ServingModel("m", "1", booster, challenger.feature_names))
    assert same[0]["challenger_score"] is None


def test_spool_lines_from_before_the_entity_id_rename_are_replayed(tmp_path: Path) -> None:
    """A spool written before migration 0006 keys the entity as ``customer_id``."""
    import json as _json

    from api.predlog import _read_chunks

    record = to_records(request(1))[0]
    record["predicted_at"] = record["predicted_at"].isoformat()
    old = {("customer_id" if k == "entity_id" else k): v for k, v in record.items()}
    old["customer_id"] = 42
    path = tmp_path / "predictions.jsonl"
    path.write_text(_json.dumps(old) + "\n")
    (chunk,) = list(_read_chunks(path, 10))
    assert chunk[0]["entity_id"] == 42 and "customer_id" not in chunk[0]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    insert_records(engine, chunk)
    with engine.connect() as conn:
        assert conn.execute(select(PredictionLogRow.entity_id)).scalar_one() == 42
    engine.dispose()


def test_a_shared_spool_of_an_older_release_is_adopted_by_one_replica(tmp_path: Path) -> None:
    shared = tmp_path / "spool"
    shared.mkdir()
    (shared / SPOOL_FILE).write_text('{"request_id": "r"}\n')
    first = adopt_shared_spool(shared, shared / "api-1")
    assert first is not None and first.parent == shared / "api-1"
    assert first.read_text() == '{"request_id": "r"}\n'
    assert adopt_shared_spool(shared, shared / "api-2") is None
    assert not (shared / SPOOL_FILE).exists()
