"""The API derives from the use case: a regression use case with categorical features (the test
fixture :data:`tests.support.api_models.RATES`, registered under ``rollguard.usecases`` like a
team's own package) served in-process, and the categorical fast paths checked against XGBoost's
own categorical handling."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient

from api.app import create_app, parse_rows_body
from api.lifecycle import ModelManager
from api.metrics import ServingMetrics
from api.model import (
    FAST_PATH_TOLERANCE,
    ModelRefused,
    ServingModel,
    check_fast_path,
    check_features,
    load_model_dir,
    model_categories,
    probe_matrix,
    with_checked_fast_path,
)
from api.schemas import api_contract, example_row
from api.xgb_dense import dense_predictor
from rollguard.settings import Settings
from tests.support.api_models import (
    CDNOW,
    RATES,
    RATES_NAME,
    cdnow_features,
    rate_records,
    rates_training_frame,
    register_rates,
    save_rates_model,
    train_booster,
    train_rates_booster,
    unregister_rates,
)
from usecases.cdnow.features import FEATURE_COLUMNS

TOKEN = "a-real-admin-token-for-tests"
CUTOFF = date(2017, 3, 6)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = register_rates(tmp_path_factory.mktemp("entry-points"), in_process=True)
    yield folder
    unregister_rates(folder)


@pytest.fixture(scope="module")
def rates_model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    booster = train_rates_booster(levels_reversed=True)
    path = save_rates_model(booster, tmp_path_factory.mktemp("rates") / "model")
    return load_model_dir(path, name=RATES.model_name, version="3", usecase=RATES)


@pytest.fixture
def client(registered: Path, home: Path, rates_model: ServingModel):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, home=home, env="test", usecase=RATES_NAME, admin_token=TOKEN
    )
    assert settings.model_name == RATES.model_name  # derived from the use case
    manager = ModelManager(
        settings.model_name, ServingMetrics.create(), tracking_uri=None, usecase=RATES
    )
    manager.install(rates_model)
    with TestClient(create_app(settings, manager=manager), raise_server_exceptions=False) as c:
        yield c


def rows_frame(n: int = 200) -> pd.DataFrame:
    x, _ = rates_training_frame()
    return x.head(n)


def as_request_rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {k: (v if isinstance(v, str) else float(v)) for k, v in r.items()}
        for r in frame.astype({s.name: "object" for s in RATES.categorical_features}).to_dict(
            "records"
        )
    ]


# --- fast paths against XGBoost's own categorical handling ---------------------------------------
def test_model_categories_are_the_boosters_own_levels(rates_model: ServingModel) -> None:
    # the booster was trained with the levels reversed: the codes must follow the model
    assert rates_model.categories == {
        "segment": tuple(reversed(RATES.feature("segment").categories)),
        "meal": tuple(reversed(RATES.feature("meal").categories)),
    }


def test_model_categories_read_from_json_equal_xgboosts_arrow_export(
    rates_model: ServingModel,
) -> None:
    # the API image has no pyarrow, so the levels are read from the model's JSON; this
    # environment has it, so the reading is checked against the library's own export
    frame, y = rates_training_frame()
    frame = frame.head(400).copy()
    frame["nights_code"] = pd.Categorical((np.arange(len(frame)) % 3 + 1) * 7)  # numeric levels
    numeric_levels = xgb.train(
        {"objective": "reg:squarederror", "nthread": 1},
        xgb.DMatrix(frame, label=y[:400], enable_categorical=True),
        num_boost_round=3,
    )
    for booster in (rates_model.booster, numeric_levels, train_booster(seed=1, rounds=2)):
        exported = booster.get_categories(export_to_arrow=True)
        arrow = (
            {}
            if exported.empty()
            else {
                str(n): tuple(str(v) for v in a.to_pylist())
                for n, a in exported.to_arrow()
                if a is not None
            }
        )
        assert model_categories(booster) == arrow
    assert model_categories(numeric_levels)["nights_code"] == ("7", "14", "21")


def test_fast_path_is_checked_against_inplace_predict_at_load(
    rates_model: ServingModel,
) -> None:
    probe = probe_matrix(rates_model, list(rates_model.input_example))
    assert probe.shape == (len(rates_model.input_example) + 64, len(rates_model.feature_names))
    assert np.isnan(probe).any()  # missing categories are probed too
    assert rates_model._dense is not None and rates_model.fast_path
    check = check_fast_path(rates_model.booster, rates_model._dense, probe)
    assert check.agrees and check.max_difference == 0.0 and check.rows == len(probe)
    assert with_checked_fast_path(rates_model, probe) is rates_model
    # a fast path that scores with another booster is caught
    other = dense_predictor(train_rates_booster(seed=9, rounds=5, levels_reversed=True))
    assert other is not None
    wrong = check_fast_path(rates_model.booster, other, probe)
    assert not wrong.agrees and wrong.max_difference > FAST_PATH_TOLERANCE
    # the fallback scores through inplace_predict, with the same scores
    slow = dataclasses.replace(rates_model, fast_path=False)
    assert slow._dense is None and not slow.fast_path
    assert np.array_equal(slow.predict(probe), rates_model.predict(probe))


def test_fast_path_scores_equal_xgboost_on_categorical_frames(rates_model: ServingModel) -> None:
    frame = rows_frame()
    frame.loc[frame.index[:3], "segment"] = np.nan  # missing categories too
    expected = rates_model.booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    inplace = rates_model.booster.inplace_predict(frame)
    rows = as_request_rows(frame)
    for r in rows[:3]:
        r["segment"] = "never-seen"  # an unseen level is scored as missing
    matrix, unseen = rates_model.encode(rows)
    assert [(i, n) for i, n, _ in unseen] == [(0, "segment"), (1, "segment"), (2, "segment")]
    assert rates_model._dense is not None  # the C-API path is the one under test
    fast = rates_model.predict(matrix)
    assert np.array_equal(fast.astype(np.float32), expected)
    assert np.array_equal(fast.astype(np.float32), inplace)


def test_cdnow_fast_path_equals_a_categorical_enabled_dmatrix() -> None:
    booster = train_booster(seed=3)
    model = ServingModel("m", "1", booster, check_features(booster, CDNOW))
    frame = cdnow_features()[list(FEATURE_COLUMNS)].head(500)
    matrix = model.to_matrix(frame.to_dict("records"))
    expected = booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    assert np.array_equal(model.predict(matrix).astype(np.float32), expected)


def test_contributions_of_a_categorical_model_add_up_to_the_margin(
    rates_model: ServingModel,
) -> None:
    frame = rows_frame(300)
    matrix = rates_model.to_matrix(as_request_rows(frame))
    contribs, bias = rates_model.explain(matrix)
    margin = rates_model.booster.predict(
        xgb.DMatrix(frame, enable_categorical=True), output_margin=True
    )
    np.testing.assert_allclose(contribs.sum(axis=1) + bias, margin, rtol=0, atol=1e-3)
    cat_index = rates_model.feature_names.index("segment")
    assert np.abs(contribs[:, cat_index]).max() > 1.0  # the categorical feature matters here


def test_a_model_that_treats_a_declared_category_as_a_number_is_refused() -> None:
    x, y = rates_training_frame()
    x = x.assign(segment=x["segment"].cat.codes.astype("float64"))
    x["meal"] = x["meal"].cat.codes.astype("float64")
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(x, label=y), 2)
    with pytest.raises(ModelRefused, match="segment"):
        check_features(booster, RATES)


def test_parse_accepts_categorical_strings_and_refuses_other_types() -> None:
    request = api_contract(RATES, 10).request
    ok = b'{"rows": [{"nights": 2, "lead_days": 3, "segment": "groups", "meal": "HB"}]}'
    assert parse_rows_body(request, ok, "application/json") == [
        {"nights": 2.0, "lead_days": 3.0, "segment": "groups", "meal": "HB"}
    ]


# --- the server -----------------------------------------------------------------------------------
def test_predict_and_explain_speak_the_use_cases_language(
    client: TestClient, rates_model: ServingModel
) -> None:
    example = example_row(RATES)
    assert example == {"nights": 3.0, "lead_days": 40.0, "segment": "online", "meal": "BB"}
    pred = client.post("/v1/predict", json={"rows": [example]})
    assert pred.status_code == 200
    body = pred.json()
    assert body["model_name"] == RATES.model_name and body["warnings"] == []
    expected = rates_model.booster.predict(
        xgb.DMatrix(RATES.feature_frame(pd.DataFrame([example])), enable_categorical=True)
    )
    assert body["scores"] == [pytest.approx(float(expected[0]), rel=1e-6)]

    explained = client.post("/v1/explain", json={"rows": [example]}).json()["explanations"][0]
    assert set(explained["contributions"]) == set(RATES.feature_names)
    total = explained["base_value"] + sum(explained["contributions"].values())
    assert total == pytest.approx(explained["score"], abs=1e-3)  # regression: margin = score

    schema = client.get("/openapi.json").json()
    row = schema["components"]["schemas"]["FeatureRow"]["properties"]
    assert row["segment"]["type"] == "string" and "groups" in row["segment"]["description"]
    assert row["nights"]["minimum"] == 1 and row["nights"]["maximum"] == 30
    assert (
        "EUR"
        in schema["components"]["schemas"]["Prediction"]["properties"]["scores"]["description"]
    )
    assert schema["components"]["schemas"]["PredictRequest"]["examples"] == [{"rows": [example]}]
    paths = set(schema["paths"])
    assert {"/v1/bookings/{booking_id}/prediction", "/v1/bookings/{booking_id}/history"} <= paths
    assert not any("customer" in p for p in paths)


def test_an_unseen_category_is_scored_as_missing_with_a_warning(client: TestClient) -> None:
    row = {**example_row(RATES), "meal": "SC"}
    missing = {**example_row(RATES)}
    for route in ("/v1/predict", "/v1/explain"):
        resp = client.post(route, json={"rows": [example_row(RATES), row]})
        assert resp.status_code == 200
        warnings = resp.json()["warnings"]
        assert len(warnings) == 1 and warnings[0]["field"] == "rows.1.meal"
        assert "'SC'" in warnings[0]["problem"] and "scored as missing" in warnings[0]["problem"]
        assert "BB" in warnings[0]["problem"]  # names the known levels
    scores = client.post("/v1/predict", json={"rows": [row]}).json()["scores"]
    frame = RATES.feature_frame(pd.DataFrame([{**missing, "meal": None}]))
    model = client.app.state.manager.current  # type: ignore[attr-defined]
    expected = model.booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    assert scores == [pytest.approx(float(expected[0]), rel=1e-6)]


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"segment": 3}, "rows.0.segment", "must be a JSON string (a category)"),
        ({"segment": None}, "rows.0.segment", "must be a JSON string (a category)"),
        ({"nights": "3"}, "rows.0.nights", "must be a JSON number"),
        ({"nights": 0.5}, "rows.0.nights", "must be >= 1"),
        ({"nights": 31}, "rows.0.nights", "must be <= 30"),
        ({"lead_days": -1}, "rows.0.lead_days", "must be >= 0"),
        ({"segment": "x" * 201}, "rows.0.segment", "must be at most 200 characters"),
        ({"colour": "red"}, "rows.0.colour", "unexpected field (not a model feature)"),
    ],
)
def test_bad_inputs_are_4xx_naming_the_field(
    client: TestClient, change: dict[str, object], field: str, problem: str
) -> None:
    resp = client.post("/v1/predict", json={"rows": [{**example_row(RATES), **change}]})
    assert resp.status_code == 422
    assert {d["field"]: d["problem"] for d in resp.json()["details"]} == {field: problem}


def test_a_missing_categorical_field_is_named(client: TestClient) -> None:
    row = {k: v for k, v in example_row(RATES).items() if k != "meal"}
    resp = client.post("/v1/explain", json={"rows": [row]})
    assert resp.status_code == 422 and resp.json()["details"] == [
        {"field": "rows.0.meal", "problem": "field required"}
    ]


def test_booking_route_scores_the_newest_snapshot_without_targeting(
    client: TestClient, home: Path
) -> None:
    none = client.get("/v1/bookings/1/prediction")
    assert none.status_code == 409 and none.json()["error"] == "no_snapshot"
    assert "`rollguard score`" in none.json()["message"]
    rows = RATES.build_rows(rate_records(), CUTOFF, label_available=True)
    folder = home / "warehouse" / "features"
    folder.mkdir(parents=True)
    rows.to_parquet(folder / f"cutoff={CUTOFF}.parquet")
    booking = rows.iloc[5]
    body = client.get(f"/v1/bookings/{int(booking['booking_id'])}/prediction").json()
    assert body["booking_id"] == int(booking["booking_id"]) and body["cutoff"] == str(CUTOFF)
    assert body["features"] == {
        "nights": booking["nights"],
        "lead_days": booking["lead_days"],
        "segment": booking["segment"],
        "meal": booking["meal"],
    }
    assert body["label_available"] is True and body["rate"] == pytest.approx(booking["rate"])
    assert "rank" not in body and "targeted" not in body  # regression: no targeting
    expected = client.post("/v1/predict", json={"rows": [body["features"]]}).json()["scores"]
    assert body["scores"] == expected
    unknown = client.get("/v1/bookings/999999/prediction")
    assert unknown.status_code == 404
    assert unknown.json()["details"] == [
        {"field": "booking_id", "problem": "not in the newest snapshot"}
    ]


def test_usecase_route_gives_the_declarations(client: TestClient) -> None:
    info = client.get("/v1/usecase").json()
    assert info["name"] == RATES_NAME and info["task"] == "regression"
    assert info["subject"] == "bookings" and info["entity_column"] == "booking_id"
    assert info["entity_route"] == "/v1/bookings/{booking_id}/prediction"
    assert info["label"]["unit"] == "EUR" and info["contribution_unit"] == "EUR"
    assert [f["name"] for f in info["features"]] == list(RATES.feature_names)
    segment = next(f for f in info["features"] if f["name"] == "segment")
    assert segment["kind"] == "categorical" and segment["categories"] == list(
        RATES.feature("segment").categories
    )
    assert info["targeting"]["applies"] is False
