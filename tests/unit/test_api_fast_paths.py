"""The model server's fast paths give exactly what the slow, library-standard paths give.

- :class:`api.xgb_dense.DensePredictor` (XGBoost's C API with a reused proxy DMatrix) against
  ``Booster.inplace_predict``, on real CDNOW rows, from one and from several threads.
- :func:`api.app.parse_rows_body` (pydantic-core's JSON parser) against ``json.loads`` plus
  validation, FastAPI's way of reading a body: same rows when valid, same errors when not.
- The prediction log's compiled insert stores what an ORM insert stores.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
import xgboost as xgb
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import insert, select

from api.app import MAX_BODY_ERRORS, UnsupportedMediaType, parse_rows_body
from api.predlog import LoggedRequest, insert_records, to_records
from api.schemas import example_row, predict_request_model
from api.xgb_dense import dense_predictor
from rollguard import db
from rollguard.db.models import PredictionLogRow
from tests.support.api_models import (
    CDNOW,
    EXAMPLE_ROW,
    RATES,
    cdnow_features,
    nan_booster,
    train_booster,
)
from usecases.cdnow.features import FEATURE_COLUMNS


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    b = train_booster(seed=3, rounds=40)
    b.set_param({"nthread": 1})
    return b


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return cdnow_features()[list(FEATURE_COLUMNS)].to_numpy(np.float32)


@pytest.mark.parametrize("n_rows", [1, 7, 64, 65, 10_000])
def test_dense_predictor_is_bit_identical_to_inplace_predict(
    booster: xgb.Booster, features: np.ndarray, n_rows: int
) -> None:
    dense = dense_predictor(booster)
    assert dense is not None
    x = np.ascontiguousarray(features[:n_rows])
    got = dense.predict(x)
    assert got.dtype == np.float64 and got.shape == (n_rows,)
    assert np.array_equal(got, booster.inplace_predict(x).astype(np.float64))


def test_dense_predictor_converts_layout_and_dtype(
    booster: xgb.Booster, features: np.ndarray
) -> None:
    dense = dense_predictor(booster)
    assert dense is not None
    x = features[:200]
    expected = booster.inplace_predict(np.ascontiguousarray(x)).astype(np.float64)
    assert np.array_equal(dense.predict(np.asfortranarray(x)), expected)
    assert np.array_equal(dense.predict(x.astype(np.float64)), expected)
    assert np.array_equal(
        dense.predict(features[:400:2]),
        booster.inplace_predict(np.ascontiguousarray(features[:400:2])).astype(np.float64),
    )
    assert dense.predict(features[:0]).shape == (0,)


def test_dense_predictor_result_is_a_copy_not_the_librarys_buffer(
    booster: xgb.Booster, features: np.ndarray
) -> None:
    dense = dense_predictor(booster)
    assert dense is not None
    first = dense.predict(features[:5])
    kept = first.copy()
    dense.predict(features[5:10])  # the library reuses its output buffer
    assert np.array_equal(first, kept)


def test_dense_predictor_refuses_a_wrong_feature_count(
    booster: xgb.Booster, features: np.ndarray
) -> None:
    dense = dense_predictor(booster)
    assert dense is not None
    with pytest.raises(xgb.core.XGBoostError):
        dense.predict(features[:3, :5])
    with pytest.raises(ValueError, match="2-d"):
        dense.predict(features[0])


def test_dense_predictor_from_several_threads_at_once(
    booster: xgb.Booster, features: np.ndarray
) -> None:
    dense = dense_predictor(booster)
    assert dense is not None
    expected = booster.inplace_predict(np.ascontiguousarray(features[:3000])).astype(np.float64)
    failures: list[str] = []
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        start.wait()
        for i in range(300):
            lo = (offset * 700 + i * 7) % 2990
            got = dense.predict(features[lo : lo + 1 + i % 9])
            if not np.array_equal(got, expected[lo : lo + 1 + i % 9]):
                failures.append(f"thread {offset} call {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_dense_predictor_passes_nan_scores_through(features: np.ndarray) -> None:
    # The serving model checks finiteness itself (NonFiniteScore); the fast path must not hide
    # a NaN the booster returns.
    bad = nan_booster()
    dense = dense_predictor(bad)
    assert dense is not None
    x = np.ascontiguousarray(features[:4])
    got = dense.predict(x)
    ref = bad.inplace_predict(x).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.isnan(got).any()


# --- body parsing -------------------------------------------------------------------------------

Model = predict_request_model(50, CDNOW)


def _slow(body: bytes) -> list[dict[str, float]] | list[dict]:
    """FastAPI's way: json.loads, then validation of the Python value."""
    return Model.model_validate(json.loads(body)).rows  # type: ignore[attr-defined,no-any-return]


def _errors(body: bytes, content_type: str = "application/json") -> list[dict]:
    with pytest.raises(RequestValidationError) as info:
        parse_rows_body(Model, body, content_type)
    return [{k: e[k] for k in ("type", "loc")} for e in info.value.errors()]


def test_valid_bodies_give_the_same_rows_as_json_loads_then_validation() -> None:
    rows = cdnow_features()[list(FEATURE_COLUMNS)].head(40).to_dict("records")
    shuffled = [dict(reversed(list(r.items()))) for r in rows]  # key order never matters
    ints = [{k: int(v) for k, v in EXAMPLE_ROW.items()}]
    for body in (
        json.dumps({"rows": rows}).encode(),
        json.dumps({"rows": shuffled}).encode(),
        json.dumps({"rows": ints}).encode(),
        json.dumps({"rows": rows[:1]}, indent=2).encode("utf-16"),
    ):
        fast = parse_rows_body(Model, body, "application/json")
        assert fast == _slow(body)
        assert all(type(v) is float for r in fast for v in r.values())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", [{"type": "missing", "loc": ("body",)}]),
        (b'{"rows": [1', [{"type": "json_invalid", "loc": ("body", 11)}]),
        (b"[]", [{"type": "model_type", "loc": ("body",)}]),
        (b'{"rows": []}', [{"type": "too_short", "loc": ("body", "rows")}]),
    ],
)
def test_invalid_bodies_give_field_and_problem(body: bytes, expected: list[dict]) -> None:
    assert _errors(body) == expected


def test_nan_and_infinity_are_named_by_field_not_refused_as_json() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps({"rows": [EXAMPLE_ROW]}).replace("20.0", literal, 1)
        assert _errors(text.encode()) == [
            {"type": "finite_number", "loc": ("body", "rows", 0, "recency_days")}
        ]


def test_strings_bools_extras_and_negatives_are_refused_like_before() -> None:
    cases = {
        "string": ({**EXAMPLE_ROW, "frequency": "3"}, "float_type"),
        "bool": ({**EXAMPLE_ROW, "frequency": True}, "float_type"),
        "negative": ({**EXAMPLE_ROW, "frequency": -1}, "greater_than_equal"),
        "extra": ({**EXAMPLE_ROW, "age": 3}, "extra_forbidden"),
    }
    for row, kind in cases.values():
        body = json.dumps({"rows": [row]}).encode()
        with pytest.raises(ValidationError) as slow:
            _slow(body)
        got = _errors(body)
        assert got == [{"type": e["type"], "loc": ("body", *e["loc"])} for e in slow.value.errors()]
        assert got[0]["type"] == kind


def test_a_non_json_content_type_is_refused_before_parsing() -> None:
    body = json.dumps({"rows": [EXAMPLE_ROW]}).encode()
    for content_type in (
        None,
        "",
        "text/plain",
        "application/xml",
        "text/json",
        "application/jsonx",
    ):
        with pytest.raises(UnsupportedMediaType):
            parse_rows_body(Model, body, content_type)
    for content_type in ("application/json; charset=utf-8", "application/problem+json"):
        assert parse_rows_body(Model, body, content_type) == _slow(body)


def test_work_on_a_bad_body_is_bounded_whatever_its_number_of_errors() -> None:
    # 10,000 rows of 20 unknown keys hold 380,000 errors; the answer names the first 50, in
    # row order, and validation stops there (no per-error work for the other rows).
    big = predict_request_model(10_000, CDNOW)
    row = {str(k): 0 for k in range(20)}
    body = json.dumps({"rows": [row] * 10_000}).encode()
    with pytest.raises(RequestValidationError) as info:
        parse_rows_body(big, body, "application/json")
    errors = info.value.errors()
    assert len(errors) == MAX_BODY_ERRORS
    assert errors[0]["loc"][:3] == ("body", "rows", 0)
    assert {e["loc"][2] for e in errors} == {0, 1}  # 38 errors per row: rows 0 and 1 only


def test_envelope_and_row_errors_together() -> None:
    body = json.dumps({"rows": [EXAMPLE_ROW, {**EXAMPLE_ROW, "n_orders": -1}], "x": 1}).encode()
    assert _errors(body) == [
        {"type": "extra_forbidden", "loc": ("body", "x")},
        {"type": "greater_than_equal", "loc": ("body", "rows", 1, "n_orders")},
    ]


def test_deep_nesting_and_huge_integers_are_client_errors() -> None:
    deep = b'{"rows":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _errors(deep)[0]["type"] == "json_invalid"
    digits = json.dumps({"rows": [EXAMPLE_ROW]}).replace("20.0", "1" + "0" * 5000, 1).encode()
    assert _errors(digits)[0]["loc"][0] == "body"


def test_a_repeated_key_is_an_error_at_the_key_not_last_wins() -> None:
    row = json.dumps(EXAMPLE_ROW)
    repeated = row[:-1] + ', "frequency": 3.0}'  # valid for pydantic, which keeps the last
    body = ('{"rows": [' + row + ", " + repeated + "]}").encode()
    assert _errors(body) == [{"type": "duplicate_key", "loc": ("body", "rows", 1, "frequency")}]
    twice = ('{"rows": [' + row + '], "rows": [' + row + "]}").encode()
    assert _errors(twice) == [{"type": "duplicate_key", "loc": ("body", "rows")}]
    # In UTF-16 too (the ':' count of the fast path sees the same structure).
    assert _errors(body.decode().encode("utf-16"))[0]["type"] == "duplicate_key"
    # A ':' inside a category makes the body take the standard path, which accepts it.
    rates = predict_request_model(50, RATES)
    colon = json.dumps({"rows": [{**example_row(RATES), "segment": "web:mobile"}] * 2}).encode()
    assert parse_rows_body(rates, colon, "application/json")[1]["segment"] == "web:mobile"
    dup = colon.replace(b'"meal"', b'"segment": "x", "meal"', 1)
    with pytest.raises(RequestValidationError) as info:
        parse_rows_body(rates, dup, "application/json")
    assert [e["loc"] for e in info.value.errors()] == [("body", "rows", 0, "segment")]


def test_invalid_utf8_is_a_json_error_not_a_crash() -> None:
    body = b'{"rows": [{"recency_days": 1\xff}]}'
    errors = _errors(body)
    assert errors[0]["type"] == "json_invalid"


# --- prediction log insert -----------------------------------------------------------------------


def test_compiled_insert_stores_what_an_orm_insert_stores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/store.db"
    db.upgrade(url)
    engine = db.make_engine(url)
    at = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    req = LoggedRequest("fast", at, "m", "3", [dict(EXAMPLE_ROW)] * 2, np.array([0.25, 0.75]))
    insert_records(engine, to_records(req))
    insert_records(engine, to_records(req))  # idempotent: on conflict do nothing
    reference = [{**r, "request_id": "orm"} for r in to_records(req)]
    with engine.begin() as conn:
        conn.execute(insert(PredictionLogRow.__table__), reference)
    with engine.connect() as conn:
        rows = (
            conn.execute(select(PredictionLogRow.__table__).order_by(PredictionLogRow.row_index))
            .mappings()
            .all()
        )
        raw = conn.exec_driver_sql(
            "select request_id, predicted_at, features, score from prediction_log "
            "order by request_id, row_index"
        ).all()
    fast = [
        {k: v for k, v in r.items() if k not in ("id", "request_id")}
        for r in rows
        if r["request_id"] == "fast"
    ]
    orm = [
        {k: v for k, v in r.items() if k not in ("id", "request_id")}
        for r in rows
        if r["request_id"] == "orm"
    ]
    assert len(fast) == 2 and fast == orm
    assert json.loads(fast[0]["features"]) == EXAMPLE_ROW
    # byte-identical storage too (the timestamp text SQLAlchemy writes for SQLite)
    assert [r[1:] for r in raw if r[0] == "fast"] == [r[1:] for r in raw if r[0] == "orm"]


def test_objects_with_very_many_keys_are_one_error_each() -> None:
    # pydantic would build one error per unknown key: 100,000 of them for this row.
    many = {f"k{j}": 1 for j in range(100_000)}
    row_body = json.dumps({"rows": [EXAMPLE_ROW, many]}).encode()
    assert _errors(row_body) == [{"type": "too_many_fields", "loc": ("body", "rows", 1)}]
    top_body = json.dumps({"rows": [EXAMPLE_ROW], **many}).encode()
    assert _errors(top_body) == [{"type": "too_many_fields", "loc": ("body",)}]
    # a few extra keys are still named one by one
    few = json.dumps({"rows": [{**EXAMPLE_ROW, "a": 1, "b": 2}]}).encode()
    assert _errors(few) == [
        {"type": "extra_forbidden", "loc": ("body", "rows", 0, "a")},
        {"type": "extra_forbidden", "loc": ("body", "rows", 0, "b")},
    ]
