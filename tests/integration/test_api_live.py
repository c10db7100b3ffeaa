"""Live signals as users run them: ``rollguard serve api`` (a real uvicorn process) serving versions
of a real MLflow registry whose live tags were set with the MLflow client, as the registry writer
sets them; real XGBoost models on real CDNOW rows. The exported PSI is the batch PSI of the scores
the server answered, for a gated version and for one forced in with the reference it replaced."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.model import ServingModel, check_features
from domain.live_profile import (
    SCORE_REFERENCE_TAG,
    TRAINING_PROFILE_TAG,
    score_reference,
    training_profile,
)
from domain.metrics import population_stability_index
from tests.support.api_models import CDNOW, cdnow_features, log_registered_version, train_booster
from tests.support.api_servers import start_api, wait_for
from usecases.cdnow.features import FEATURE_COLUMNS

TOKEN = "integration-live-token-0123456789"


def live_series(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in family.samples:
            if s.name.startswith("rollguard_live_"):
                out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(series: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for ls, v in series.get(name, []) if all(ls.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, series.get(name))
    return found[0]


def post_rows(url: str, rows: list[dict[str, float]], size: int) -> np.ndarray:
    scores = []
    for start in range(0, len(rows), size):
        resp = httpx.post(
            url + "/v1/predict", json={"rows": rows[start : start + size]}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        scores += resp.json()["scores"]
    return np.asarray(scores)


def test_the_server_exports_live_psi_from_the_registry_tags(
    mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    frame = cdnow_features()
    train = frame[frame["cutoff"] == frame["cutoff"].min()]
    live = frame[frame["cutoff"] == frame["cutoff"].max()].sample(frac=1.0, random_state=5)
    rows = live[list(FEATURE_COLUMNS)].head(800).to_dict("records")
    client = MlflowClient(mlflow_server, mlflow_server)
    name = f"live-test-{uuid.uuid4().hex[:8]}"
    gated = train_booster(seed=3, rounds=20)
    forced = train_booster(seed=4, rounds=3)
    v1 = log_registered_version(gated, name, mlflow_server)
    v2 = log_registered_version(forced, name, mlflow_server)
    plain = ServingModel(name, v1, gated, check_features(gated, CDNOW))
    gate_scores = plain.predict(plain.to_matrix(train[list(FEATURE_COLUMNS)].to_dict("records")))
    reference = score_reference(gate_scores, version=v1, cutoffs=("1997-05-05",))
    profile = training_profile(CDNOW.feature_frame(train), CDNOW).to_json()
    client.set_model_version_tag(name, v1, SCORE_REFERENCE_TAG, reference.to_json())
    client.set_model_version_tag(name, v1, TRAINING_PROFILE_TAG, profile)
    # v2 reaches champion without the gate: it carries the reference of the champion it replaces.
    client.set_model_version_tag(name, v2, SCORE_REFERENCE_TAG, reference.as_replaced().to_json())
    client.set_model_version_tag(name, v2, TRAINING_PROFILE_TAG, profile)
    client.set_registered_model_alias(name, "champion", v1)

    api = start_api(
        tmp_path / "home",
        mlflow_server,
        name,
        tmp_path / "logs",
        token=TOKEN,
        ROLLGUARD_LIVE_MIN_ROWS="300",
        ROLLGUARD_LIVE_WINDOW_ROWS="400",
    )
    try:
        first = post_rows(api.url, rows[:299], 50)
        series = live_series(api.url)
        assert value(series, "rollguard_live_window_rows", version=v1) == 299
        assert "rollguard_live_score_psi" not in series  # below the minimum count
        scores = np.concatenate([first, post_rows(api.url, rows[299:450], 1)])
        series = live_series(api.url)
        assert value(series, "rollguard_live_window_rows", version=v1) == 400
        assert value(series, "rollguard_live_score_count", version=v1) == 450
        psi = value(series, "rollguard_live_score_psi", version=v1)
        assert psi == pytest.approx(population_stability_index(gate_scores, scores[-400:]))
        info = {"version": v1, "reference_version": v1, "source": "gated"}
        assert value(series, "rollguard_live_reference_info", **info) == 1
        assert {ls["feature"] for ls, _ in series["rollguard_live_feature_psi"]} == set(
            FEATURE_COLUMNS
        )

        client.set_registered_model_alias(name, "champion", v2)
        wait_for(
            lambda: httpx.get(api.url + "/readyz").json()["model_version"] == v2,
            what=f"version {v2} serving",
        )
        forced_scores = post_rows(api.url, rows[450:], 100)
        series = live_series(api.url)
        info = {"version": v2, "reference_version": v1, "source": "replaced"}
        assert value(series, "rollguard_live_reference_info", **info) == 1
        psi2 = value(series, "rollguard_live_score_psi", version=v2)
        assert psi2 == pytest.approx(population_stability_index(gate_scores, forced_scores))
        # A 3-round model scores nothing like the gated one: far above the guard's 1.0.
        assert psi2 > 1.0 > psi
        assert value(series, "rollguard_live_window_rows", version=v1) == 400  # v1 kept
        model_info = httpx.get(api.url + "/v1/model").json()["live"]
        assert model_info["reference_source"] == "replaced" and model_info["rows"] == 350
    finally:
        api.stop()
