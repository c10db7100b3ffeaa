"""Live signals of the model server (api/live.py): the window, the minimum count, PSI equal to the
batch PSI of the same samples, missing, out-of-range and unseen shares, at most three versions,
bad tags that never stop serving, and the series a real app exports after traffic.

Models are real XGBoost boosters trained on real CDNOW and hotel rows; their score references
and training profiles are built with :mod:`domain.live_profile`, as the registry writer does."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.lifecycle import ModelManager
from api.live import LiveMonitor, score_buckets
from api.metrics import ServingMetrics
from api.model import ServingModel, check_features, serving_categories
from domain.live_profile import (
    SCORE_REFERENCE_TAG,
    TRAINING_PROFILE_TAG,
    score_reference,
    training_profile,
)
from domain.metrics import population_stability_index, psi_from_shares
from rollguard import db
from rollguard.settings import Settings
from rollguard.usecase import load_usecase
from tests.support.api_models import CDNOW, cdnow_features, train_booster
from usecases.cdnow.features import FEATURE_COLUMNS

HOTEL = load_usecase("hotel")
TOKEN = "a-real-admin-token-for-live-tests"


# --- real models and their live tags -------------------------------------------------------------
@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """CDNOW feature rows at the first cutoff (training/gate) and at the second (live)."""
    frame = cdnow_features()
    first = frame[frame["cutoff"] == frame["cutoff"].min()].reset_index(drop=True)
    second = frame[frame["cutoff"] == frame["cutoff"].max()].reset_index(drop=True)
    return first, second


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    b = train_booster(seed=7)
    b.set_param({"nthread": 1})
    return b


def cdnow_tags(booster: xgb.Booster, train: pd.DataFrame, version: str) -> dict[str, str]:
    """The tags the registry writer gives a gated version: its gate-time scores' reference and
    its training profile."""
    plain = ServingModel("m", version, booster, check_features(booster, CDNOW))
    scores = plain.predict(plain.to_matrix(train[list(FEATURE_COLUMNS)].to_dict("records")))
    return {
        SCORE_REFERENCE_TAG: score_reference(scores, version=version).to_json(),
        TRAINING_PROFILE_TAG: training_profile(CDNOW.feature_frame(train), CDNOW).to_json(),
    }


def serving(booster: xgb.Booster, version: str, tags: dict[str, str]) -> ServingModel:
    return ServingModel(
        "cdnow-repurchase",
        version,
        booster,
        check_features(booster, CDNOW),
        tags=MappingProxyType(tags),
    )


@pytest.fixture(scope="module")
def model(booster: xgb.Booster, frames: tuple[pd.DataFrame, pd.DataFrame]) -> ServingModel:
    return serving(booster, "7", cdnow_tags(booster, frames[0], "7"))


def observe_frame(
    monitor: LiveMonitor, model: ServingModel, frame: pd.DataFrame, chunks: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Score ``frame``'s rows in requests of ``chunks`` rows and observe them; (matrix, scores)."""
    rows = frame[list(FEATURE_COLUMNS)].to_dict("records")
    matrices, all_scores, start = [], [], 0
    for size in chunks:
        part = rows[start : start + size]
        start += size
        matrix, unseen = model.encode(part)
        scores = model.predict(matrix)
        monitor.observe(model, matrix, scores, unseen, part)
        matrices.append(matrix)
        all_scores.append(scores)
    return np.vstack(matrices), np.concatenate(all_scores)


def scrape(monitor: LiveMonitor) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The collector's exposition, parsed back: sample name -> [(labels, value)]."""
    registry = CollectorRegistry()
    registry.register(monitor)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


# --- window, minimum, PSI --------------------------------------------------------------------------
def test_score_and_feature_psi_equal_the_batch_psi_of_the_window(
    model: ServingModel, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, live = frames
    monitor = LiveMonitor(CDNOW, window_rows=2000, min_rows=300)
    # 2,600 rows in requests of 1 to 900 rows: the window wraps and keeps the last 2,000.
    matrix, scores = observe_frame(monitor, model, live, [1, 7, 900, 92, 600, 1, 999])
    got = monitor.version_figures("7")
    assert got is not None and got.window_rows == 2000
    reference = model.predict(model.to_matrix(train[list(FEATURE_COLUMNS)].to_dict("records")))
    expected = population_stability_index(reference, scores[-2000:])
    assert got.score_psi == pytest.approx(expected, rel=1e-12)
    # Integer-valued features are exact in float32: the live PSI is the batch PSI of the samples.
    for name in ("recency_days", "frequency", "orders_12w", "tenure_days"):
        j = model.feature_names.index(name)
        batch = population_stability_index(
            train[name].to_numpy(np.float64), matrix[-2000:, j].astype(np.float64)
        )
        assert got.features[name].psi == pytest.approx(batch, rel=1e-9), name
    assert set(got.features) == set(FEATURE_COLUMNS)
    # Rows of another customer population shift recency: the figures are not all zero.
    assert max(f.psi for f in got.features.values()) > 0.1


def test_no_figure_before_the_minimum_count_but_always_the_window_rows(
    model: ServingModel, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    monitor = LiveMonitor(CDNOW, window_rows=500, min_rows=300)
    observe_frame(monitor, model, frames[1], [200, 99])
    series = scrape(monitor)
    assert series["rollguard_live_window_rows"] == [({"version": "7"}, 299.0)]
    assert "rollguard_live_score_psi" not in series
    assert "rollguard_live_feature_psi" not in series
    assert "rollguard_live_feature_missing_share" not in series
    # The reference is known before the figures are: its info is exported from the start.
    assert series["rollguard_live_reference_info"] == [
        ({"version": "7", "reference_version": "7", "source": "gated"}, 1.0)
    ]
    observe_frame(monitor, model, frames[1].iloc[299:], [1])
    series = scrape(monitor)
    assert [v for _, v in series["rollguard_live_window_rows"]] == [300.0]
    assert len(series["rollguard_live_score_psi"]) == 1
    assert len(series["rollguard_live_feature_psi"]) == len(FEATURE_COLUMNS)


def test_the_histogram_counts_every_row_not_only_the_window(
    model: ServingModel, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    monitor = LiveMonitor(CDNOW, window_rows=300, min_rows=300)
    _, scores = observe_frame(monitor, model, frames[1], [250, 1, 2500, 49, 280])
    series = scrape(monitor)
    buckets = {float(labels["le"]): v for labels, v in series["rollguard_live_score_bucket"]}
    assert sorted(buckets)[:-1] == [pytest.approx(0.05 * k) for k in range(1, 21)]
    for bound, count in buckets.items():
        assert count == float((scores <= bound).sum()), bound
    assert series["rollguard_live_score_count"] == [({"version": "7"}, float(len(scores)))]
    assert series["rollguard_live_score_sum"][0][1] == pytest.approx(scores.sum())
    assert series["rollguard_live_window_rows"][0][1] == 300.0


def test_missing_and_out_of_range_shares(
    model: ServingModel, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, live = frames
    monitor = LiveMonitor(CDNOW, window_rows=1000, min_rows=300)
    rows = live[list(FEATURE_COLUMNS)].head(1000).to_dict("records")
    top = float(train["monetary_total"].max())
    for i in range(0, 1000, 10):  # 100 rows spend more than any training customer
        rows[i]["monetary_total"] = top * 2
    for i in range(0, 1000, 20):  # 50 rows (half of them also above) have no recency
        rows[i]["recency_days"] = None
    rows[1]["monetary_total"] = top  # the training maximum itself is in range
    matrix, unseen = model.encode(rows)
    monitor.observe(model, matrix, model.predict(matrix), unseen, rows)
    got = monitor.version_figures("7")
    assert got is not None
    assert got.features["monetary_total"].out_of_range_share == pytest.approx(0.1)
    assert got.features["recency_days"].missing_share == pytest.approx(0.05)
    # 28 days later many customers have gone longer without buying than any at training time:
    # out of range, except where recency is missing (missing is not out of range).
    recency = [r["recency_days"] for r in rows]
    low, high = train["recency_days"].min(), train["recency_days"].max()
    outside = sum(v is not None and not low <= v <= high for v in recency)
    assert 0 < outside < 950
    assert got.features["recency_days"].out_of_range_share == pytest.approx(outside / 1000)
    assert got.features["frequency"].missing_share == 0.0
    # The same rows unmodified shift monetary_total less.
    plain = LiveMonitor(CDNOW, window_rows=1000, min_rows=300)
    observe_frame(plain, model, live.head(1000), [1000])
    before = plain.version_figures("7")
    assert before is not None
    assert got.features["monetary_total"].psi > before.features["monetary_total"].psi + 0.05


# --- categorical: unseen and missing levels (hotel) ------------------------------------------------
@pytest.fixture(scope="module")
def hotel_model() -> tuple[ServingModel, pd.DataFrame]:
    """A hotel booster trained on 20 weeks of arrivals with its live tags; and later rows."""
    records = HOTEL.load_history().records
    cutoffs = [date(2016, 7, 4) + timedelta(weeks=k) for k in range(40)]
    rows = pd.concat(
        [HOTEL.build_rows(records, c, label_available=True) for c in cutoffs], ignore_index=True
    )
    train, live = rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2 :]
    features = HOTEL.feature_frame(train)
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4, "nthread": 1, "seed": 1},
        xgb.DMatrix(features, label=train[HOTEL.label.column], enable_categorical=True),
        num_boost_round=20,
    )
    names = check_features(booster, HOTEL)
    plain = ServingModel(
        "hotel", "3", booster, names, categories=serving_categories(booster, HOTEL)
    )
    gate_scores = plain.predict(plain.to_matrix(_records(train)))
    tags = {
        SCORE_REFERENCE_TAG: score_reference(gate_scores, version="3").to_json(),
        TRAINING_PROFILE_TAG: training_profile(features, HOTEL).to_json(),
    }
    model = ServingModel(
        "hotel",
        "3",
        booster,
        names,
        tags=MappingProxyType(tags),
        categories=serving_categories(booster, HOTEL),
    )
    return model, live.reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    out = []
    for row in frame[list(HOTEL.feature_names)].to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        )
    return out


def test_unseen_levels_are_out_of_range_and_missing_levels_are_missing_on_hotel(
    hotel_model: tuple[ServingModel, pd.DataFrame],
) -> None:
    model, live = hotel_model
    rows = _records(live.head(400))
    for i in range(0, 400, 10):  # 40 bookings of a segment the model never saw
        rows[i]["market_segment"] = "aviation"
    for i in range(5, 400, 20):  # 20 bookings without a meal plan (the entity route's None)
        rows[i]["meal"] = None
    monitor = LiveMonitor(HOTEL, window_rows=400, min_rows=400)
    matrix, unseen = model.encode(rows)
    assert {(i, "market_segment", "aviation") for i in range(0, 400, 10)} <= set(unseen)
    monitor.observe(model, matrix, model.predict(matrix), unseen, rows)
    got = monitor.version_figures("3")
    assert got is not None and got.score_psi is not None
    segment, meal = got.features["market_segment"], got.features["meal"]
    assert segment.out_of_range_share == pytest.approx(0.1)
    assert segment.missing_share == 0.0
    assert meal.missing_share == pytest.approx(0.05)
    assert meal.out_of_range_share == 0.0
    # The segment's PSI, from the shares counted by hand: each level, then unseen, then missing.
    profile = model_profile(model).feature("market_segment")
    assert profile is not None
    values = [r["market_segment"] for r in rows]
    hand = [values.count(level) / 400 for level in profile.levels] + [0.1, 0.0]
    assert segment.psi == pytest.approx(psi_from_shares(np.asarray(profile.shares), hand))
    # Regression: 20 equal-width buckets over the label's declared range, in EUR.
    bounds = score_buckets(HOTEL, None)
    assert len(bounds) == 21 and bounds[0] == HOTEL.label.minimum
    assert bounds[-1] == HOTEL.label.maximum


def model_profile(model: ServingModel):  # type: ignore[no-untyped-def]
    from domain.live_profile import TrainingProfile

    return TrainingProfile.from_json(model.tags[TRAINING_PROFILE_TAG])


# --- versions and bad tags ---------------------------------------------------------------------
def test_at_most_three_versions_the_most_recently_scoring_ones(
    booster: xgb.Booster, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    live = frames[1]
    tags = cdnow_tags(booster, frames[0], "1")
    models = {v: serving(booster, v, tags) for v in ("1", "2", "3", "4", "5")}
    monitor = LiveMonitor(CDNOW, window_rows=300, min_rows=300)
    for v in ("1", "2", "3"):
        observe_frame(monitor, models[v], live, [300])
    observe_frame(monitor, models["1"], live, [5])  # 1 scored again: 2 is now the oldest
    observe_frame(monitor, models["4"], live, [300])
    assert monitor.versions() == ["3", "1", "4"]
    observe_frame(monitor, models["5"], live, [1])
    assert monitor.versions() == ["1", "4", "5"]
    series = scrape(monitor)
    for name, samples in series.items():
        assert {labels["version"] for labels, _ in samples} <= {"1", "4", "5"}, name
    assert monitor.version_figures("2") is None


def test_malformed_tags_are_logged_once_and_serving_goes_on(
    booster: xgb.Booster,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = serving(
        booster,
        "9",
        {
            SCORE_REFERENCE_TAG: '{"version": "9", "source": "gated", "edges": [0.5]}',
            TRAINING_PROFILE_TAG: "not json at all",
        },
    )
    monitor = LiveMonitor(CDNOW, window_rows=300, min_rows=300)
    with caplog.at_level(logging.WARNING, logger="rollguard.api"):
        observe_frame(monitor, bad, frames[1], [300, 10])
    series = scrape(monitor)
    assert series["rollguard_live_window_rows"] == [({"version": "9"}, 300.0)]
    assert series["rollguard_live_score_count"] == [({"version": "9"}, 310.0)]
    for name in ("score_psi", "reference_info", "feature_psi", "feature_out_of_range_share"):
        assert f"rollguard_live_{name}" not in series
    messages = [r.getMessage() for r in caplog.records]
    assert sum("malformed score reference" in m for m in messages) == 1
    assert sum("malformed training profile" in m for m in messages) == 1


def test_an_observation_error_is_counted_and_never_raised(
    model: ServingModel, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    errors = Counter("live_errors", "test", registry=registry)
    monitor = LiveMonitor(CDNOW, window_rows=300, min_rows=300, errors=errors)
    wrong = np.zeros((2, 3), dtype=np.float32)  # not the model's 18 columns
    with caplog.at_level(logging.ERROR, logger="rollguard.api"):
        for _ in range(3):
            monitor.observe(model, wrong, np.zeros(2), [], [])
    assert registry.get_sample_value("live_errors_total") == 3
    assert sum("live signals failed" in r.getMessage() for r in caplog.records) == 1


def test_a_minimum_above_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="no live figure would ever be exported"):
        LiveMonitor(CDNOW, window_rows=100, min_rows=300)


# --- a real app ------------------------------------------------------------------------------------
def make_client(home: Path, model: ServingModel, **kw: object) -> tuple[TestClient, ModelManager]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, home=home, env="test", admin_token=TOKEN, **kw
    )
    db.upgrade(settings.monitoring_db_url)
    manager = ModelManager(settings.model_name, ServingMetrics.create(), tracking_uri=None)
    manager.install(model)
    client = TestClient(create_app(settings, manager=manager), raise_server_exceptions=False)
    return client, manager


def metrics_of(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name.startswith("rollguard_live_") and not s.name.startswith("rollguard_live_err"):
                out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_real_app_exports_the_series_after_traffic_with_bounded_labels(
    home: Path,
    booster: xgb.Booster,
    model: ServingModel,
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    live = frames[1]
    rows = live[list(FEATURE_COLUMNS)].to_dict("records")
    folder = home / "warehouse" / "features"
    folder.mkdir(parents=True)
    live.to_parquet(folder / "cutoff=1997-06-02.parquet")
    client, manager = make_client(home, model, live_min_rows=300, live_window_rows=2000)
    with client:
        for k in range(4):
            assert client.post(
                "/v1/predict", json={"rows": rows[k * 100 : (k + 1) * 100]}
            ).is_success
        assert client.post("/v1/explain", json={"rows": rows[:50]}).is_success  # not observed
        cid = int(live["customer_id"].iloc[3])
        assert client.get(f"/v1/customers/{cid}/prediction").is_success  # observed
        series = metrics_of(client)
        assert series["rollguard_live_window_rows"] == [({"version": "7"}, 401.0)]
        assert series["rollguard_live_score_count"] == [({"version": "7"}, 401.0)]
        assert series["rollguard_live_reference_info"] == [
            ({"version": "7", "reference_version": "7", "source": "gated"}, 1.0)
        ]
        assert len(series["rollguard_live_score_psi"]) == 1
        features = {labels["feature"] for labels, _ in series["rollguard_live_feature_psi"]}
        assert features == set(FEATURE_COLUMNS)
        info = client.get("/v1/model").json()
        assert info["live"]["rows"] == 401 and info["live"]["reference_source"] == "gated"
        assert info["live"]["notes"] == []
        assert not any(k.startswith("rollguard.live.") for k in info["lineage"])
        # Five more versions serve in turn: labels stay within the three most recent.
        tags = dict(model.tags)
        for v in ("8", "9", "10", "11", "12"):
            manager.install(serving(booster, v, tags))
            assert client.post("/v1/predict", json={"rows": rows[:3]}).is_success
        series = metrics_of(client)
        for name, samples in series.items():
            assert {labels["version"] for labels, _ in samples} == {"10", "11", "12"}, name
            assert {labels.get("feature") for labels, _ in samples} <= {None, *FEATURE_COLUMNS}
        errors = [
            line for line in client.get("/metrics").text.splitlines()
            if line.startswith("rollguard_live_errors_total")
        ]  # fmt: skip
        assert errors == ["rollguard_live_errors_total 0.0"]


def test_live_signals_off_export_nothing_and_say_so(
    home: Path, booster: xgb.Booster, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    untagged = serving(booster, "4", {})
    client, _ = make_client(home, untagged, live_signals=False)
    with client:
        rows = frames[1][list(FEATURE_COLUMNS)].head(400).to_dict("records")
        assert client.post("/v1/predict", json={"rows": rows}).is_success
        assert metrics_of(client) == {}
        assert client.get("/v1/model").json()["live"]["enabled"] is False
    client, _ = make_client(home, untagged)
    with client:
        assert client.post("/v1/predict", json={"rows": rows}).is_success
        series = metrics_of(client)
        assert series["rollguard_live_window_rows"] == [({"version": "4"}, 400.0)]
        assert "rollguard_live_score_psi" not in series
        notes = client.get("/v1/model").json()["live"]["notes"]
        assert any("no live score PSI" in n for n in notes)
