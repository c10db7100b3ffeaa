"""A small regression use case for tests (a fixture, not a shipped use case): nightly room rates of
synthetic bookings, with numeric and categorical features, one row per booking of the ISO week that
ends at the cutoff (``event``), the label known at once, a value column in EUR and one declared
baseline. Monitoring and dashboard tests use it to check that nothing assumes binary
classification or a CDNOW column.

``make_records(weeks, rows_per_week, seed)`` draws the records; ``shift=True`` moves the segment mix
and the lead times (a drifted week).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from rollguard.usecase import (
    CUTOFF_COLUMN,
    LABEL_AVAILABLE_COLUMN,
    BaselineSpec,
    FeatureSpec,
    History,
    LabelSpec,
    SliceSpec,
    TargetingSpec,
    TaskType,
    UseCase,
    ValueSpec,
)

SEGMENTS = ("direct", "online", "group")
MEALS = ("BB", "HB", "FB")

RECORD_SCHEMA = pa.DataFrameSchema(
    {
        "booking_id": pa.Column("int64", coerce=True),
        "arrival": pa.Column("datetime64[ns]", coerce=True),
        "nights": pa.Column("float64", pa.Check.ge(1), coerce=True),
        "lead_days": pa.Column("float64", pa.Check.ge(0), coerce=True),
        "segment": pa.Column(str, pa.Check.isin(SEGMENTS)),
        "meal": pa.Column(str, pa.Check.isin(MEALS)),
        "rate": pa.Column("float64", pa.Check.ge(0), coerce=True),
        "last_rate": pa.Column("float64", nullable=True, coerce=True),
    },
    strict=True,
)


class ToyRates(UseCase):
    """Nightly rate of a booking (regression, EUR)."""

    name = "toyrates"
    title = "Toy room rates"
    model_name = "toyrates-model"
    task = TaskType.REGRESSION
    scoring_unit = "event"
    entity_column = "booking_id"
    record_schema = RECORD_SCHEMA
    record_id_column = "booking_id"
    record_time_column = "arrival"
    file_prefix = "toyrates_"
    features = (
        FeatureSpec("nights", "numeric", "Nights booked.", 3.0, "nights", 1),
        FeatureSpec("lead_days", "numeric", "Days from booking to arrival.", 30.0, "days", 0),
        FeatureSpec("segment", "categorical", "Sales channel.", "online", categories=SEGMENTS),
        FeatureSpec("meal", "categorical", "Meal plan.", "BB", categories=MEALS),
    )
    label = LabelSpec(
        column="rate", description="Average nightly rate.", unit="EUR", minimum=0, maximum=1000
    )
    value = ValueSpec(column="room_revenue", description="rate x nights", unit="EUR")
    slices = (SliceSpec("segment", "segment", "sales channel"),)
    targeting = TargetingSpec(budget=1.0, description="every booking is priced", subject="bookings")
    baselines = (BaselineSpec("last_rate", "last_rate", "the guest's previous rate"),)
    training_cutoffs = 4
    evaluation_cutoffs = 2

    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        records = make_records(8, 200, seed=0)
        return History(records, Path("synthetic"), "0" * 64, "synthetic")

    def build_rows(
        self, records: pd.DataFrame, cutoff: date, *, label_available: bool
    ) -> pd.DataFrame:
        start = pd.Timestamp(cutoff - timedelta(days=7))
        week = records[(records["arrival"] >= start) & (records["arrival"] < pd.Timestamp(cutoff))]
        rows = week.sort_values("booking_id").reset_index(drop=True)
        out = pd.DataFrame(
            {
                "booking_id": rows["booking_id"].astype("int64"),
                CUTOFF_COLUMN: pd.Timestamp(cutoff),
                "nights": rows["nights"].astype("float64"),
                "lead_days": rows["lead_days"].astype("float64"),
                "segment": rows["segment"].astype("object"),
                "meal": rows["meal"].astype("object"),
                "rate": rows["rate"].astype("float64"),
                "room_revenue": (rows["rate"] * rows["nights"]).astype("float64"),
                LABEL_AVAILABLE_COLUMN: True,
                "last_rate": rows["last_rate"].astype("float64"),
            }
        )
        if not label_available:
            out["rate"] = np.nan
            out["room_revenue"] = np.nan
            out[LABEL_AVAILABLE_COLUMN] = False
        return out


USECASE = ToyRates()


def true_rate(frame: pd.DataFrame) -> np.ndarray:
    """The noiseless rate the records are drawn around (EUR): what a perfect model predicts."""
    segment = frame["segment"].astype(str)
    base = segment.map({"direct": 110.0, "online": 95.0, "group": 70.0}).to_numpy(dtype=float)
    meal = frame["meal"].astype(str).map({"BB": 0.0, "HB": 20.0, "FB": 35.0}).to_numpy(dtype=float)
    return base + meal - 0.2 * frame["lead_days"].to_numpy(dtype=float)


def make_records(
    weeks: int,
    rows_per_week: int,
    *,
    seed: int,
    first: date = date(2024, 1, 1),
    shift: bool = False,
) -> pd.DataFrame:
    """``weeks`` ISO weeks of bookings from ``first`` (a Monday), ``rows_per_week`` each.

    Rates: a segment and meal price minus 0.2 EUR per lead day, plus noise (sd 10 EUR); the
    previous rate is the rate plus noise (sd 25 EUR), missing for one booking in ten."""
    rng = np.random.default_rng(seed)
    n = weeks * rows_per_week
    mix = [0.2, 0.3, 0.5] if shift else [0.3, 0.6, 0.1]
    frame = pd.DataFrame(
        {
            "booking_id": np.arange(1, n + 1, dtype=np.int64),
            "arrival": pd.Timestamp(first)
            + pd.to_timedelta(np.repeat(np.arange(weeks) * 7, rows_per_week), unit="D")
            + pd.to_timedelta(rng.integers(0, 7, n), unit="D"),
            "nights": rng.integers(1, 8, n).astype(float),
            "lead_days": rng.gamma(2.0, 40.0 if shift else 20.0, n).round(),
            "segment": rng.choice(SEGMENTS, n, p=mix),
            "meal": rng.choice(MEALS, n, p=[0.6, 0.3, 0.1]),
        }
    )
    frame["rate"] = np.clip(true_rate(frame) + rng.normal(0, 10, n), 0, None)
    last = frame["rate"] + rng.normal(0, 25, n)
    frame["last_rate"] = np.where(rng.random(n) < 0.1, np.nan, last)
    return frame
