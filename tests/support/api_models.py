"""Real small XGBoost models on real CDNOW features, for the API tests and benchmark."""

from __future__ import annotations

import sys
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


# --- a second, regression use case with categorical features (test fixture) ---------------------
# Declared here, not in usecases/: it proves the API and UI derive everything from a UseCase. It is
# registered under rollguard.usecases by a dist-info folder written at test time
# (:func:`register_rates`), exactly as a team's own package registers.
import pandera.pandas as pa  # noqa: E402

from rollguard.usecase import (  # noqa: E402
    FeatureSpec,
    History,
    LabelSpec,
    TargetingSpec,
    TaskType,
    UseCase,
    ValueSpec,
)

RATES_NAME = "rates-fixture"
SEGMENTS = ("online", "offline", "corporate", "groups")
MEALS = ("BB", "HB", "FB")


class RatesFixture(UseCase):
    """Test fixture: the nightly rate (EUR) of a booking, from two numeric and two categorical
    features, one row per booking arriving in the ISO week before the cutoff (``event``)."""

    name = RATES_NAME
    title = "Room rates (test fixture)"
    model_name = "rates-fixture-model"
    task = TaskType.REGRESSION
    scoring_unit = "event"
    entity_column = "booking_id"
    record_schema = pa.DataFrameSchema(
        {
            "booking_id": pa.Column("int64", coerce=True),
            "arrival": pa.Column("datetime64[ns]", coerce=True),
            "nights": pa.Column("int64", pa.Check.ge(1), coerce=True),
            "lead_days": pa.Column("int64", pa.Check.ge(0), coerce=True),
            "segment": pa.Column(str, pa.Check.isin(SEGMENTS)),
            "meal": pa.Column(str, pa.Check.isin(MEALS)),
            "rate": pa.Column("float64", pa.Check.ge(0), coerce=True),
        },
        strict=True,
        ordered=True,
    )
    record_id_column = "booking_id"
    record_time_column = "arrival"
    file_prefix = "rates_"
    features = (
        FeatureSpec("nights", "numeric", "Nights booked.", 3.0, "nights", 1, 30),
        FeatureSpec("lead_days", "numeric", "Days from booking to arrival.", 40.0, "days", 0, 700),
        FeatureSpec("segment", "categorical", "Market segment.", "online", categories=SEGMENTS),
        FeatureSpec("meal", "categorical", "Meal plan booked.", "BB", categories=MEALS),
    )
    label = LabelSpec(
        column="rate", description="Average nightly rate.", unit="EUR", minimum=0, maximum=1000
    )
    value = ValueSpec(column="revenue", description="Room revenue of the booking.", unit="EUR")
    targeting = TargetingSpec(budget=1.0, description="every booking is priced", subject="bookings")

    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        """Seeded synthetic bookings (no file)."""
        return History(rate_records(), Path("<synthetic>"), "", "test fixture")

    def build_rows(
        self, records: pd.DataFrame, cutoff: date, *, label_available: bool
    ) -> pd.DataFrame:
        """Bookings arriving in ``[cutoff - 7 days, cutoff)``; the label is known at once."""
        end = pd.Timestamp(cutoff)
        week = records[
            (records["arrival"] >= end - pd.Timedelta(days=7)) & (records["arrival"] < end)
        ]
        rows = week.sort_values("booking_id").reset_index(drop=True)
        out = pd.DataFrame(
            {
                "booking_id": rows["booking_id"].astype("int64"),
                "cutoff": end,
                "nights": rows["nights"].astype("float64"),
                "lead_days": rows["lead_days"].astype("float64"),
                "segment": rows["segment"].astype("object"),
                "meal": rows["meal"].astype("object"),
                "rate": rows["rate"].astype("float64") if label_available else np.nan,
                "revenue": (rows["rate"] * rows["nights"]).astype("float64")
                if label_available
                else np.nan,
                "label_available": label_available,
            }
        )
        return out


#: The registered instance (entry point ``rates-fixture = tests.support.api_models:RATES``).
RATES = RatesFixture()


def rate_records(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    """Seeded bookings: the rate depends on segment, meal, nights and lead time (EUR)."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(SEGMENTS, n, p=[0.5, 0.2, 0.2, 0.1])
    meal = rng.choice(MEALS, n, p=[0.6, 0.3, 0.1])
    nights = rng.integers(1, 15, n)
    lead = rng.integers(0, 400, n)
    base = pd.Series(segment).map({"online": 110, "offline": 90, "corporate": 80, "groups": 70})
    extra = pd.Series(meal).map({"BB": 0, "HB": 25, "FB": 45})
    rate = base + extra - 0.05 * lead + 2 * nights + rng.normal(0, 8, n)
    return pd.DataFrame(
        {
            "booking_id": np.arange(1, n + 1, dtype="int64"),
            "arrival": pd.Timestamp("2017-01-02") + pd.to_timedelta(rng.integers(0, 70, n), "D"),
            "nights": nights.astype("int64"),
            "lead_days": lead.astype("int64"),
            "segment": segment,
            "meal": meal,
            "rate": np.clip(rate.to_numpy(), 1, None),
        }
    )


def rates_training_frame() -> tuple[pd.DataFrame, np.ndarray]:
    """Model inputs (``RATES.feature_frame``: pandas categories with the declared levels) and
    labels of every synthetic booking."""
    records = rate_records()
    cutoffs = pd.date_range("2017-01-09", "2017-03-20", freq="7D")
    rows = pd.concat(
        [RATES.build_rows(records, c.date(), label_available=True) for c in cutoffs],
        ignore_index=True,
    )
    return RATES.feature_frame(rows), rows["rate"].to_numpy()


def train_rates_booster(
    seed: int = 3, rounds: int = 30, levels_reversed: bool = False
) -> xgb.Booster:
    """A small ``reg:squarederror`` booster with native categorical splits. With
    ``levels_reversed`` its categorical columns list their levels in reverse order, so the
    model's category codes differ from the declaration's (the API must use the model's)."""
    x, y = rates_training_frame()
    if levels_reversed:
        for spec in RATES.categorical_features:
            x[spec.name] = x[spec.name].cat.reorder_categories(list(reversed(spec.categories)))
    dm = xgb.DMatrix(x, label=y, enable_categorical=True)
    params = {
        "objective": "reg:squarederror",
        "max_depth": 4,
        "eta": 0.3,
        "seed": seed,
        "nthread": 1,
        "max_cat_to_onehot": 1,
    }
    return xgb.train(params, dm, num_boost_round=rounds)


def save_rates_model(booster: xgb.Booster, path: Path) -> Path:
    """``booster`` as an MLflow model folder with a categorical input example, no server."""
    import mlflow.xgboost

    example = (
        rates_training_frame()[0]
        .head(5)
        .astype({s.name: "object" for s in RATES.categorical_features})
    )
    from mlflow.models import infer_signature

    mlflow.xgboost.save_model(
        booster,
        str(path),
        model_format="ubj",
        signature=infer_signature(example, np.zeros(len(example))),
        input_example=example,
        pip_requirements=["xgboost"],
    )
    return path


def log_rates_version(booster: xgb.Booster, model_name: str, tracking_uri: str) -> str:
    """Log ``booster`` to the tracking server as a new version of ``model_name``; its version."""
    import mlflow
    import mlflow.xgboost

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("rollguard-api-tests")
    example = (
        rates_training_frame()[0]
        .head(5)
        .astype({s.name: "object" for s in RATES.categorical_features})
    )
    from mlflow.models import infer_signature

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


def register_rates(folder: Path, *, in_process: bool = False) -> Path:
    """Register :data:`RATES` under ``rollguard.usecases`` the way an installed package does: a
    ``.dist-info`` folder with ``entry_points.txt`` in ``folder`` (give it as ``PYTHONPATH`` to a
    subprocess). With ``in_process`` the folder is also put on this process's ``sys.path``, until
    :func:`unregister_rates` takes it off again (later tests must see only the built-in use
    cases). Returns ``folder``."""
    dist = folder / "rollguard_rates_fixture-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rollguard-rates-fixture\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[rollguard.usecases]\n{RATES_NAME} = tests.support.api_models:RATES\n"
    )
    if in_process and str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder


def unregister_rates(folder: Path) -> None:
    """Take ``folder`` (from :func:`register_rates`) off ``sys.path`` again."""
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
