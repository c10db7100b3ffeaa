"""Result lineage (``domain/lineage.py``) on the embedded store: what a result recorded, when a
late week makes it stale, and the backfill plan that follows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain import lineage
from domain.scoring import score_batch
from domain.warehouse import accepted_batches
from pipeline.backfill import plan_backfill
from rollguard.db.models import IngestionDecision
from rollguard.settings import Settings
from rollguard.store import open_store

C = date(1997, 5, 19)  # the Monday of 1997-W21


@pytest.fixture
def engine(settings: Settings) -> Engine:
    eng = open_store(settings)
    yield eng
    eng.dispose()


def accept(engine: Engine, *weeks: str) -> None:
    with Session(engine) as session, session.begin():
        for week in weeks:
            session.add(
                IngestionDecision(
                    batch_id=f"b{week}",
                    file_name=f"purchases_{week}.csv",
                    content_sha256=f"{week:0>64}",
                    size_bytes=1,
                    week=week,
                    status="accepted",
                    n_rows=1,
                    decided_at=datetime.now(UTC),
                )
            )


def test_window_reads_only_weeks_before_its_end(settings: Settings, engine: Engine) -> None:
    accept(engine, "1997-W19", "1997-W20", "1997-W21", "1997-W24")
    batches = accepted_batches(settings, engine=engine)
    assert lineage.window_batches(batches, C) == ["b1997-W19", "b1997-W20"]
    end = lineage.window_end(C, 28, labelled=True)
    assert lineage.window_batches(batches, end) == [
        "b1997-W19",
        "b1997-W20",
        "b1997-W21",
        "b1997-W24",
    ]
    assert lineage.window_end(C, 28, labelled=False) == C
    assert lineage.window_end(C, 0, labelled=True) == C  # a label known at once adds nothing


def test_a_late_week_makes_exactly_the_results_that_read_it_stale(
    settings: Settings, engine: Engine
) -> None:
    accept(engine, "1997-W01", "1997-W20")
    batches = accepted_batches(settings, engine=engine)
    for cutoff in (date(1997, 1, 6), C):  # W02's Monday, and W21's
        ids = lineage.window_batches(batches, cutoff)
        lineage.record(engine, kind=lineage.SNAPSHOT, cutoff=cutoff, until=cutoff, batch_ids=ids)
    lineage.record(
        engine,
        kind=lineage.PREDICTIONS,
        cutoff=C,
        until=C,
        batch_ids=lineage.window_batches(batches, C),
        model_name="m",
        model_version="3",
    )
    assert lineage.stale_results(engine, batches, model_name="m") == []
    assert lineage.is_fresh(engine, batches, lineage.SNAPSHOT, C)

    accept(engine, "1997-W07")  # late: after W20
    batches = accepted_batches(settings, engine=engine)
    stale = lineage.stale_results(engine, batches, model_name="m")
    assert [(s.kind, s.cutoff, s.model_version) for s in stale] == [
        (lineage.SNAPSHOT, C, ""),
        (lineage.PREDICTIONS, C, "3"),
    ]  # the W02 snapshot never read W07: still fresh
    assert stale[0].added == ("1997-W07",)
    assert stale[0].reason == "week 1997-W07 accepted after it was computed"
    assert not lineage.is_fresh(engine, batches, lineage.SNAPSHOT, C)
    assert lineage.is_fresh(engine, batches, lineage.SNAPSHOT, date(1997, 1, 6))
    assert lineage.stale_results(engine, batches, model_name="other") == [stale[0]]

    # Rebuilding with the new batch set makes it fresh and counts the recomputation.
    lineage.record(
        engine,
        kind=lineage.SNAPSHOT,
        cutoff=C,
        until=C,
        batch_ids=lineage.window_batches(batches, C),
    )
    assert lineage.is_fresh(engine, batches, lineage.SNAPSHOT, C)
    assert lineage.recorded(engine, lineage.SNAPSHOT, C) == ["b1997-W01", "b1997-W07", "b1997-W20"]


def test_a_result_without_lineage_is_never_fresh(settings: Settings, engine: Engine) -> None:
    accept(engine, "1997-W20")
    assert not lineage.is_fresh(engine, accepted_batches(settings, engine=engine), "snapshot", C)
    with pytest.raises(ValueError, match="lineage kind"):
        lineage.record(engine, kind="labels", cutoff=C, until=C, batch_ids=[])


def test_backfill_plan_orders_stale_results_by_cutoff_then_dependency(
    settings: Settings, engine: Engine
) -> None:
    accept(engine, "1997-W19", "1997-W20")
    batches = accepted_batches(settings, engine=engine)
    ids = lineage.window_batches(batches, C)
    name = settings.model_name
    for kind, version in (
        (lineage.DRIFT, ""),
        (lineage.PREDICTIONS, "2"),
        (lineage.SNAPSHOT, ""),
    ):
        lineage.record(
            engine,
            kind=kind,
            cutoff=C,
            until=C,
            batch_ids=ids,
            model_name="" if kind == lineage.SNAPSHOT else name,
            model_version=version,
        )
    assert plan_backfill(settings, engine, batches) == []
    accept(engine, "1997-W10")
    plan = plan_backfill(settings, engine, accepted_batches(settings, engine=engine))
    assert [(w.kind, w.model_version) for w in plan] == [
        (lineage.SNAPSHOT, ""),
        (lineage.PREDICTIONS, "2"),
        (lineage.DRIFT, ""),
    ]
    assert all(w.reason == "week 1997-W10 accepted after it was computed" for w in plan)


def test_predictions_of_a_labelled_snapshot_record_only_the_weeks_before_the_cutoff(
    settings: Settings, engine: Engine
) -> None:
    """A snapshot whose label matured records its horizon weeks too; the predictions scored from
    it read only the weeks before the cutoff, and must not look stale right away."""
    accept(engine, "1997-W19", "1997-W20", "1997-W21", "1997-W22")
    batches = accepted_batches(settings, engine=engine)
    labelled = lineage.window_batches(batches, lineage.window_end(C, 14, labelled=True))
    features = pd.DataFrame(
        {n: [1.0, 2.0] for n in settings.usecase_spec.feature_names}
        | {settings.usecase_spec.entity_column: [1, 2]}
    )
    score_batch(
        settings,
        C,
        model_version="1",
        predict=lambda x: x.iloc[:, 0].to_numpy(),
        features=features,
        batch_ids=labelled,
        engine=engine,
    )
    name = settings.model_name
    assert lineage.recorded(engine, lineage.PREDICTIONS, C, model_name=name, model_version="1") == [
        "b1997-W19",
        "b1997-W20",
    ]
    assert lineage.stale_results(engine, batches, model_name=name) == []
