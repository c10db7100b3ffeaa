"""The model server in-process (TestClient): routes, validation, limits, errors, admin, metrics.

The model is a real XGBoost booster trained on real CDNOW features and saved in MLflow's format;
the registry is not involved here (see tests/integration/test_api_*.py)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.lifecycle import ModelManager
from api.metrics import MultipleWorkersError, ServingMetrics, check_single_process
from api.model import ModelRefused, ServingModel, check_features, load_model_dir
from rollguard import db
from rollguard.db.models import PredictionLogRow
from rollguard.settings import Settings
from tests.support.api_models import EXAMPLE_ROW, nan_booster, save_mlflow_model, train_booster
from usecases.cdnow.features import FEATURE_COLUMNS

TOKEN = "a-real-admin-token-for-tests"
MAX_ROWS = 50
MAX_BODY = 40 * 1024


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    path = save_mlflow_model(train_booster(seed=7), tmp_path_factory.mktemp("m") / "model")
    return load_model_dir(
        path,
        name="cdnow-repurchase",
        version="7",
        tags={"status": "champion", "gate.decision": "promote", "dataset_sha256": "abc"},
    )


def make_settings(home: Path, **kw: object) -> Settings:
    base: dict[str, object] = dict(
        home=home,
        env="test",
        admin_token=TOKEN,
        api_max_rows=MAX_ROWS,
        api_max_body_bytes=MAX_BODY,
    )
    base.update(kw)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg, arg-type]


def make_client(settings: Settings, model: ServingModel | None) -> TestClient:
    manager = ModelManager(settings.model_name, ServingMetrics.create(), tracking_uri=None)
    if model is not None:
        manager.install(model)
    return TestClient(create_app(settings, manager=manager), raise_server_exceptions=False)


@pytest.fixture
def client(home: Path, model: ServingModel):
    with make_client(make_settings(home), model) as c:
        yield c


def rows(n: int) -> list[dict[str, float]]:
    rng = random.Random(n)
    return [{k: v * rng.uniform(0.5, 1.5) for k, v in EXAMPLE_ROW.items()} for _ in range(n)]


def problems(resp) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = resp.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    return {d["field"]: d["problem"] for d in body["details"]}


# --- predictions ---------------------------------------------------------------------------------
def test_predict_names_the_version_and_matches_the_booster(
    client: TestClient, model: ServingModel
) -> None:
    batch = rows(20)
    resp = client.post("/v1/predict", json={"rows": batch})
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_version"] == "7" == resp.headers["x-model-version"]
    expected = model.booster.inplace_predict(model.to_matrix(batch))
    np.testing.assert_allclose(body["scores"], expected, rtol=1e-6)
    assert all(0.0 <= s <= 1.0 for s in body["scores"])


def test_features_are_matched_by_name_not_position(client: TestClient) -> None:
    row = rows(1)[0]
    reversed_row = dict(reversed(list(row.items())))
    a = client.post("/v1/predict", json={"rows": [row]}).json()["scores"]
    b = client.post("/v1/predict", json={"rows": [reversed_row]}).json()["scores"]
    assert a == b


def test_explain_contributions_add_up_to_the_margin(client: TestClient) -> None:
    resp = client.post("/v1/explain", json={"rows": rows(3)})
    assert resp.status_code == 200
    for e in resp.json()["explanations"]:
        assert set(e["contributions"]) == set(FEATURE_COLUMNS)
        margin = e["base_value"] + sum(e["contributions"].values())
        assert 1 / (1 + math.exp(-margin)) == pytest.approx(e["score"], abs=1e-5)


def test_model_info_has_lineage_and_gate_evidence(client: TestClient) -> None:
    info = client.get("/v1/model").json()
    assert info["model_version"] == "7"
    assert info["status"] == "champion"
    assert info["gate"] == {"gate.decision": "promote"}
    assert info["lineage"] == {"dataset_sha256": "abc"}


# --- validation ----------------------------------------------------------------------------------
def _with(**changes: object) -> dict[str, object]:
    row: dict[str, object] = dict(EXAMPLE_ROW)
    for k, v in changes.items():
        if v is _DROP:
            row.pop(k)
        else:
            row[k] = v
    return row


_DROP = object()


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        (_with(recency_days=_DROP), "rows.0.recency_days", "field required"),
        (_with(favourite_colour=1.0), "rows.0.favourite_colour", "unexpected field"),
        (_with(n_orders="3"), "rows.0.n_orders", "must be a JSON number"),
        (_with(n_orders=True), "rows.0.n_orders", "must be a JSON number"),
        (_with(n_orders=None), "rows.0.n_orders", "must be a JSON number"),
        (_with(orders_4w=-1), "rows.0.orders_4w", "must be >= 0"),
        (_with(spend_4w=1e300), "rows.0.spend_4w", "float32"),
    ],
)
def test_bad_rows_are_422_naming_the_field(
    client: TestClient, row: dict, field: str, problem: str
) -> None:
    resp = client.post("/v1/predict", json={"rows": [row]})
    assert resp.status_code == 422
    assert problem in problems(resp)[field]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(client: TestClient, literal: str) -> None:
    body = json.dumps({"rows": [EXAMPLE_ROW]}).replace("20.0", literal, 1)
    assert literal in body
    resp = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "finite" in problems(resp)["rows.0.recency_days"]


def test_empty_and_oversized_batches_are_refused(client: TestClient) -> None:
    empty = client.post("/v1/predict", json={"rows": []})
    assert empty.status_code == 422 and "at least one row" in problems(empty)["rows"]
    too_many = client.post("/v1/explain", json={"rows": rows(MAX_ROWS + 1)})
    assert too_many.status_code == 422 and "too many rows" in problems(too_many)["rows"]
    assert client.post("/v1/predict", json={"rows": rows(MAX_ROWS)}).status_code == 200


def test_malformed_json_is_a_4xx_json_error(client: TestClient) -> None:
    resp = client.post(
        "/v1/predict", content=b'{"rows": [', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "validation_error"
    assert body["details"][0]["field"] == "body"
    assert body["details"][0]["problem"].startswith("not valid JSON at character ")


def test_a_body_that_is_not_json_is_415_naming_the_content_type(client: TestClient) -> None:
    resp = client.post(
        "/v1/predict",
        content=b"rows=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 415
    body = resp.json()
    assert body["error"] == "unsupported_media_type"
    assert body["details"] == [
        {"field": "content-type", "problem": "'application/x-www-form-urlencoded' is not JSON"}
    ]


def test_every_error_carries_a_request_id(client: TestClient) -> None:
    for resp in (
        client.post("/v1/predict", json={"rows": []}),
        client.get("/v1/nothing-here"),
        client.post(
            "/v1/predict",
            content=b"x" * (MAX_BODY + 1),
            headers={"content-type": "application/json"},
        ),
    ):
        assert resp.status_code >= 400
        request_id = resp.json()["request_id"]
        assert isinstance(request_id, str) and len(request_id) == 32
        assert resp.headers["x-request-id"] == request_id


def test_body_over_the_limit_is_413_with_or_without_content_length(client: TestClient) -> None:
    big = json.dumps({"rows": rows(MAX_ROWS) * 2}).encode()
    assert len(big) > MAX_BODY
    declared = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: sent with Transfer-Encoding: chunked
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    chunked = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    metrics = client.get("/metrics").text
    assert (
        'rollguard_http_requests_total{method="POST",route="/v1/predict",status="413"} 2.0'
        in metrics
    )


# --- errors and readiness ------------------------------------------------------------------------
def test_non_finite_model_output_is_a_counted_json_500(home: Path, model: ServingModel) -> None:
    booster = nan_booster()
    broken = ServingModel(
        name="m", version="9", booster=booster, feature_names=check_features(booster)
    )
    with make_client(make_settings(home), broken) as c:
        resp = c.post("/v1/predict", json={"rows": rows(2)}, headers={"X-Request-ID": "nan-1"})
        assert resp.status_code == 500
        assert resp.json()["error"] == "invalid_model_output"
        # The request id of a 500 is the client's, in the header and the body alike.
        assert resp.headers["x-request-id"] == resp.json()["request_id"] == "nan-1"
        assert "Traceback" not in resp.text
        assert (
            'rollguard_prediction_errors_total{reason="non_finite_score"} 1.0'
            in c.get("/metrics").text
        )


def test_a_nan_model_is_refused_at_load(tmp_path: Path) -> None:
    path = save_mlflow_model(nan_booster(), tmp_path / "nan")
    with pytest.raises(ModelRefused, match="non-finite"):
        load_model_dir(path, name="m", version="9")


def test_wrong_feature_names_are_refused_at_load(tmp_path: Path) -> None:
    names = tuple(f"f{i}" for i in range(len(FEATURE_COLUMNS)))
    path = save_mlflow_model(train_booster(seed=1, rounds=2, feature_names=names), tmp_path / "w")
    with pytest.raises(ModelRefused, match="feature names differ"):
        load_model_dir(path, name="m", version="2")


def test_not_ready_without_a_model(home: Path) -> None:
    with make_client(make_settings(home), None) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        resp = c.post("/v1/predict", json={"rows": rows(1)})
        assert resp.status_code == 503
        assert resp.json()["error"] == "not_ready" and "champion" in resp.json()["message"]
        assert "`rollguard train`" in resp.json()["message"]  # the step that is missing


# --- customers -----------------------------------------------------------------------------------
def test_customer_prediction_reads_the_newest_snapshot(home: Path, model: ServingModel) -> None:
    from datetime import date

    from tests.support.api_models import cdnow_features

    settings = make_settings(home)
    # Migrated before the app starts: two of its threads migrating one fresh SQLite file at once
    # can collide ("table ... already exists"), which is not what this test is about.
    db.upgrade(settings.monitoring_db_url)
    with make_client(settings, model) as c:
        resp = c.get("/v1/customers/1/prediction")
        # Nothing built a snapshot yet: a 4xx in Rollguard's words, naming the step to run.
        assert resp.status_code == 409 and resp.json()["error"] == "no_snapshot"
        assert "run `rollguard score`" in resp.json()["message"]
        history = c.get("/v1/customers/1/history")
        assert history.status_code == 404
        assert "nothing has been ingested yet" in history.json()["message"]
        assert "`rollguard data ingest`" in history.json()["message"]
        frame = cdnow_features()
        folder = settings.warehouse_dir / "features"
        folder.mkdir(parents=True)
        old = frame[frame["cutoff"] == "1997-05-05"]
        new = frame[frame["cutoff"] == "1997-06-02"]
        old.to_parquet(folder / f"cutoff={date(1997, 5, 5)}.parquet")
        new.to_parquet(folder / f"cutoff={date(1997, 6, 2)}.parquet")
        cid = int(new["customer_id"].iloc[10])
        body = c.get(f"/v1/customers/{cid}/prediction").json()
        assert body["cutoff"] == "1997-06-02" and body["model_version"] == "7"
        expected = new.set_index("customer_id").loc[cid, list(FEATURE_COLUMNS)].to_dict()
        assert body["features"] == pytest.approx(expected)
        unknown = c.get("/v1/customers/99999999/prediction")
        assert unknown.status_code == 404 and "99999999" in unknown.json()["message"]


# --- admin and security --------------------------------------------------------------------------
def test_admin_reload_needs_the_token(client: TestClient) -> None:
    assert client.post("/v1/admin/reload").status_code == 401
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    ok = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["model_version"] == "7"


def test_admin_is_closed_without_a_configured_token(home: Path, model: ServingModel) -> None:
    with make_client(make_settings(home, admin_token=None, env="development"), model) as c:
        resp = c.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
        assert resp.status_code == 503 and resp.json()["message"] == "admin token not configured"


def test_cors_is_closed_unless_origins_are_configured(home: Path, model: ServingModel) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with make_client(make_settings(home), model) as c:
        assert (
            "access-control-allow-origin" not in c.options("/v1/predict", headers=preflight).headers
        )
    s = make_settings(home, api_cors_origins=["https://ui.example"])
    with make_client(s, model) as c:
        ok = c.options("/v1/predict", headers={**preflight, "Origin": "https://ui.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        # A browser client may send its own request id, and read the answer's.
        with_id = c.options(
            "/v1/predict",
            headers={
                **preflight,
                "Origin": "https://ui.example",
                "Access-Control-Request-Headers": "content-type, x-request-id",
            },
        )
        assert with_id.status_code == 200
        answer = c.get("/healthz", headers={"Origin": "https://ui.example"})
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


def test_one_process_per_container_is_enforced() -> None:
    check_single_process({"WEB_CONCURRENCY": "1"})
    with pytest.raises(MultipleWorkersError):
        check_single_process({"WEB_CONCURRENCY": "4"})
    with pytest.raises(MultipleWorkersError):
        check_single_process({"PROMETHEUS_MULTIPROC_DIR": "/tmp/x"})


# --- metrics and the prediction log --------------------------------------------------------------
def test_unknown_paths_do_not_create_series(client: TestClient) -> None:
    rng = random.Random(0)
    for _ in range(10_000):
        path = "/" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789/", k=12))
        method = rng.choice(["GET", "POST", "BREW"])
        client.request(method, path)
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    series = [
        s for m in registry.collect() for s in m.samples if s.name.startswith("rollguard_http")
    ]
    routes = {s.labels.get("route") for s in series}
    assert "unmatched" in routes
    assert len(series) < 200, len(series)
    assert all(
        r == "unmatched" or r.startswith(("/v1", "/healthz", "/readyz", "/metrics")) for r in routes
    )


def test_every_prediction_reaches_the_prediction_log(home: Path, model: ServingModel) -> None:
    settings = make_settings(home)
    with make_client(settings, model) as c:
        ids = [
            c.post("/v1/predict", json={"rows": rows(n)}).json()["request_id"] for n in (1, 5, 17)
        ]
    # Leaving the client stopped the writer, which writes everything queued first.
    engine = db.make_engine(settings.monitoring_db_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(PredictionLogRow)).scalar_one()
        logged = conn.execute(select(PredictionLogRow.request_id).distinct()).scalars().all()
    engine.dispose()
    assert n == 1 + 5 + 17
    assert set(logged) == set(ids)


def test_micro_batching_never_mixes_models(model: ServingModel) -> None:
    import asyncio

    from api.batching import MicroBatcher

    other_booster = train_booster(seed=8, rounds=4)
    other = ServingModel(
        name="m", version="8", booster=other_booster, feature_names=check_features(other_booster)
    )
    bad_booster = nan_booster()
    bad = ServingModel(
        name="m", version="9", booster=bad_booster, feature_names=check_features(bad_booster)
    )
    batch = rows(12)

    async def run() -> list:
        batcher = MicroBatcher()
        calls = [
            batcher.predict(m, m.to_matrix(batch[i : i + 1]))
            for i, m in enumerate([model, other, bad] * 4)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    for i, (m, got) in enumerate(zip([model, other, bad] * 4, results, strict=True)):
        if m is bad:
            assert isinstance(got, Exception) and "non-finite" in str(got)
        else:
            expected = m.booster.inplace_predict(m.to_matrix(batch[i : i + 1]))
            np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_path_and_query_bounds_are_stated_as_they_are(client: TestClient) -> None:
    huge = client.get("/v1/customers/99999999999999999999999/prediction")
    assert huge.status_code == 422
    assert huge.json()["details"] == [
        {
            "field": "customer_id",
            "problem": "number too large",
        }
    ]
    zero = client.get("/v1/model/history?limit=0")
    assert zero.status_code == 422
    assert zero.json()["details"] == [{"field": "limit", "problem": "must be at least 1"}]


def test_an_unhandled_error_is_a_500_with_the_request_id(home: Path, model: ServingModel) -> None:
    """Answered by Starlette's outermost error middleware, outside RequestIdMiddleware: the id
    still comes from the request (a context variable), in the header and the body."""
    client = make_client(make_settings(home), model)

    async def boom() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    with client as c:
        given = c.get("/boom", headers={"X-Request-ID": "boom:1"})
        generated = c.get("/boom")
    assert given.status_code == 500 and generated.status_code == 500
    assert given.headers["x-request-id"] == given.json()["request_id"] == "boom:1"
    assert generated.headers["x-request-id"] == generated.json()["request_id"]
    assert len(generated.json()["request_id"]) == 32 and "boom" not in generated.text
