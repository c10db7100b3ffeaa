"""Point-in-time rows for the hotel room-rate task: one row per booking of the arrival week.

At a cutoff ``t`` (a Monday) the rows are the bookings arriving in ``[t - 7 days, t)``, the ISO
week that ends at ``t``. Every feature is a field of the booking itself that is known when the
booking is made (what was booked, by whom, through which channel, for which dates), or derived
from it; nothing is read from other bookings, so a row cannot see the future. The label, the
booking's average price per room-night (EUR), is known once the stay is checked out; the feed
delivers bookings by arrival week, so it is available as soon as the week is ingested (horizon 0).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from rollguard.weeks import check_cutoff

ID = "booking_id"
ARRIVAL = "arrival_date"
LABEL = "avg_price_per_room"
#: Business value of a row: room revenue of the stay, EUR (price per night x nights).
VALUE = "room_revenue"
#: Slice column: ``weekend`` (the stay includes a Saturday or Sunday night) or ``weekday``.
STAY_TYPE = "stay_type"
#: Baseline column (also a model input): the smoothed 2015-16 average rate of the arrival's
#: calendar day, computed by modeldata from arrivals before this data set begins.
HISTORICAL_ADR = "historical_adr"

OTHER = "other"
UNKNOWN = "unknown"
#: Countries with at least 100 bookings in the packaged data (ISO 3166-1 alpha-3 in lower case,
#: as the source writes them; ``cn`` is the source's own code). Others are ``other``, a missing
#: country is ``unknown``.
TOP_COUNTRIES: tuple[str, ...] = (
    "prt",
    "gbr",
    "esp",
    "irl",
    "fra",
    "deu",
    "cn",
    "usa",
    "ita",
    "bel",
    "nld",
    "bra",
    "che",
    "swe",
    "pol",
    "aut",
)
#: Booking agents with at least 100 bookings in the packaged data (modeldata replaced the agent
#: ids by random names); ``not_applicable`` is a booking without an agent. Others are ``other``.
TOP_AGENTS: tuple[str, ...] = (
    "not_applicable",
    "devin_rivera_borrego",
    "alexander_drake",
    "charles_najera",
    "cynthia_worsley",
    "lia_nauth",
    "jawaad_el_shahid",
    "michael_mcdole",
    "lance_hitchcock",
    "isaac_matsuyama",
    "ramalaan_al_musa",
    "orlando_abeyta",
    "qutb_al_arshad",
    "renee_barron",
    "skye_fernandez",
    "jawhara_al_azad",
)
NO_COMPANY = "not_applicable"
MONTHS: tuple[str, ...] = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Record columns copied to the row as they are (categorical ones as text).
COPIED_CATEGORICAL: tuple[str, ...] = (
    "meal",
    "market_segment",
    "distribution_channel",
    "reserved_room_type",
    "customer_type",
)
COPIED_NUMERIC: tuple[str, ...] = (
    "lead_time",
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "babies",
    "is_repeated_guest",
    "previous_cancellations",
    "previous_bookings_not_canceled",
    "near_christmas",
    "near_new_years",
    HISTORICAL_ADR,
)
DERIVED_CATEGORICAL: tuple[str, ...] = (
    "country_group",
    "agent_group",
    "arrival_month",
    "arrival_weekday",
)
DERIVED_NUMERIC: tuple[str, ...] = ("booked_by_company",)


def arrival_week(records: pd.DataFrame, cutoff: date) -> pd.DataFrame:
    """The bookings arriving in ``[cutoff - 7 days, cutoff)`` (the ISO week ending at ``cutoff``).

    Raises:
        ValueError: ``cutoff`` is not a Monday.
    """
    check_cutoff(cutoff)
    end = pd.Timestamp(cutoff)
    start = end - pd.Timedelta(days=7)
    arrivals = records[ARRIVAL]
    return records.loc[(arrivals >= start) & (arrivals < end)]


def build_rows(records: pd.DataFrame, cutoff: date, *, label_available: bool) -> pd.DataFrame:
    """One row per booking of the arrival week ending at ``cutoff``.

    Args:
        records: booking records (columns of the record schema, ``arrival_date`` datetime64).
        cutoff: a Monday.
        label_available: whether the week's labels are ingested; when False the label and the
            room revenue are NaN.

    Returns:
        Rows sorted by ``booking_id`` (int64) with ``cutoff`` (datetime64[ns]), the copied and
        derived features (numeric as float64, categorical as text), ``avg_price_per_room``
        (EUR per night, float64), ``room_revenue`` (EUR, float64), ``label_available`` (bool),
        ``stay_type`` (``weekend``/``weekday``) and ``historical_adr`` (EUR per night).

    Raises:
        ValueError: ``cutoff`` is not a Monday.
    """
    week = arrival_week(records, cutoff).sort_values(ID, kind="stable")
    out = pd.DataFrame({ID: week[ID].astype("int64").to_numpy()})
    out["cutoff"] = pd.Series(pd.Timestamp(cutoff), index=out.index).astype("datetime64[ns]")
    for column in COPIED_CATEGORICAL:
        out[column] = week[column].astype("object").to_numpy()
    for column in COPIED_NUMERIC:
        out[column] = week[column].to_numpy(dtype="float64")
    for column, values in derive(week).items():
        out[column] = values
    weekend_nights = week["stays_in_weekend_nights"].to_numpy()
    out[STAY_TYPE] = np.where(weekend_nights > 0, "weekend", "weekday").astype(object)
    if label_available:
        price = week[LABEL].to_numpy(dtype="float64")
        nights = weekend_nights + week["stays_in_week_nights"].to_numpy()
        out[LABEL] = price
        out[VALUE] = price * nights.astype("float64")
    else:
        out[LABEL] = np.nan
        out[VALUE] = np.nan
    out["label_available"] = bool(label_available)
    return out


def derive(week: pd.DataFrame) -> dict[str, np.ndarray]:
    """Features derived from one booking's own fields (same row order as ``week``).

    ``country_group``: the country if in :data:`TOP_COUNTRIES`, ``unknown`` when missing, else
    ``other``; ``agent_group``: the agent if in :data:`TOP_AGENTS`, else ``other``;
    ``booked_by_company``: 1.0 when a company made or pays the booking; ``arrival_month`` and
    ``arrival_weekday``: short lower-case names of the arrival date's month and weekday.
    """
    country = week["country"]
    country_group = np.where(
        country.isna(), UNKNOWN, np.where(country.isin(TOP_COUNTRIES), country, OTHER)
    )
    agent = week["agent"]
    arrival = week[ARRIVAL]
    return {
        "country_group": country_group.astype(object),
        "agent_group": np.where(agent.isin(TOP_AGENTS), agent, OTHER).astype(object),
        "arrival_month": np.asarray(MONTHS, dtype=object)[arrival.dt.month.to_numpy() - 1],
        "arrival_weekday": np.asarray(WEEKDAYS, dtype=object)[arrival.dt.weekday.to_numpy()],
        "booked_by_company": (week["company"] != NO_COMPANY).to_numpy(dtype="float64"),
    }


def arrival_weeks(records: pd.DataFrame) -> pd.Series:
    """Bookings per arrival week: a Series indexed by each week's cutoff (the Monday after the
    week, as a date), in calendar order; weeks without bookings are left out."""
    starts = records[ARRIVAL].dt.normalize() - pd.to_timedelta(records[ARRIVAL].dt.weekday, "D")
    counts = starts.value_counts().sort_index()
    counts.index = [(ts + pd.Timedelta(days=7)).date() for ts in counts.index]
    return counts.rename("bookings")


def cutoff_after(day: date) -> date:
    """The cutoff (Monday) that ends the ISO week containing ``day``."""
    return day + timedelta(days=7 - day.weekday())
