"""Real small XGBoost models on real CDNOW features, for the API tests and benchmark."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from api.schemas import example_row
from rollguard.usecase import load_usecase
from usecases.cdnow.features import FEATURE_COLUMNS, LABEL, build_features

#: The CDNOW use case and its declared example row (the API's OpenAPI example).
CDNOW = load_usecase("cdnow")
EXAMPLE_ROW: dict[str, float] = example_row(CDNOW)  # type: ignore[assignment]

CUTOFFS = (date(1997, 5, 5), date(1997, 6, 2))


@lru_cache(maxsize=1)
def cdnow_features() -> pd.DataFrame:
    """Feature and label rows of CDNOW at two cutoffs (about 40,000 rows)."""
    from usecases.cdnow.source import load_dataset

    transactions, _, _ = load_dataset()
    frames = [build_features(transactions, c, label_available=True) for c in CUTOFFS]
    return pd.concat(frames, ignore_index=True)


def train_booster(
    seed: int, rounds: int = 15, feature_names: tuple[str, ...] = FEATURE_COLUMNS
) -> xgb.Booster:
    """A small binary:logistic booster trained on :func:`cdnow_features`; ``feature_names``
    renames the columns (to build a model that breaks the API contract)."""
    frame = cdnow_features()
    x = frame[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    y = frame[LABEL].astype("int8").to_numpy()
    dm = xgb.DMatrix(x, label=y, feature_names=list(feature_names))
    params = {
        "objective": "binary:logistic",
        "max_depth": 3,
        "eta": 0.3,
        "subsample": 0.8,
        "seed": seed,
        "nthread": 1,
    }
    return xgb.train(params, dm, num_boost_round=rounds)


def example_frame(n: int = 5, feature_names: tuple[str, ...] = FEATURE_COLUMNS) -> pd.DataFrame:
    """The first ``n`` CDNOW feature rows (input example), columns renamed to ``feature_names``."""
    frame = cdnow_features()[list(FEATURE_COLUMNS)].head(n).copy()
    frame.columns = list(feature_names)
    return frame


def save_mlflow_model(booster: xgb.Booster, path: Path) -> Path:
    """Save ``booster`` as an MLflow model folder (ubj, signature, input example), no server."""
    import mlflow.xgboost
    from mlflow.models import infer_signature

    example = example_frame(feature_names=tuple(booster.feature_names or FEATURE_COLUMNS))
    mlflow.xgboost.save_model(
        booster,
        str(path),
        model_format="ubj",
        signature=infer_signature(example, np.zeros(len(example))),
        input_example=example,
        pip_requirements=["xgboost"],
    )
    return path


def log_registered_version(booster: xgb.Booster, model_name: str, tracking_uri: str) -> str:
    """Log ``booster`` to the tracking server as a new version of ``model_name``; its version."""
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    example = example_frame(feature_names=tuple(booster.feature_names or FEATURE_COLUMNS))
    mlflow.set_experiment("rollguard-api-tests")
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            model_format="ubj",
            signature=infer_signature(example, np.zeros(len(example))),
            input_example=example,
            pip_requirements=["xgboost"],
            registered_model_name=model_name,
        )
    return str(info.registered_model_version)


def nan_booster() -> xgb.Booster:
    """A real booster whose every score is NaN (leaf values set to NaN in its JSON model)."""
    import json

    raw = json.loads(train_booster(1, rounds=2).save_raw("json"))
    for tree in raw["learner"]["gradient_booster"]["model"]["trees"]:
        leaves = tree["left_children"]
        tree["split_conditions"] = [
            float("nan") if left == -1 else v
            for v, left in zip(tree["split_conditions"], leaves, strict=True)
        ]
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(raw).encode()))
    return booster
