"""Point-in-time features and labels for the CDNOW repurchase task.

At a cutoff ``t`` (a Monday), one row per customer whose first purchase is dated before ``t``.
Features use only purchases dated strictly before ``t``; the label and the horizon revenue use only
purchases dated in ``[t, t + horizon)`` (see :mod:`rollguard.weeks`). A label exists only when every
ISO week of the horizon has been ingested; otherwise it is missing (``<NA>``), never zero.

Recency/frequency/monetary features follow the RFM tradition of customer-base analysis (Fader, Hardie
& Lee, "RFM and CLV", Journal of Marketing Research 42(4), 2005).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import numpy as np
import pandas as pd

from rollguard.weeks import check_cutoff, horizon_weeks

#: Name of the label column: repurchase within the horizon after the cutoff.
LABEL = "repurchase"
#: Business value per row: revenue (USD) of the customer inside the horizon.
REVENUE = "revenue_horizon"
#: Slice column: ``new`` (one purchase day before the cutoff) or ``returning``.
CUSTOMER_TYPE = "customer_type"
#: Label horizon after a cutoff, days.
HORIZON_DAYS = 28

#: Model inputs, in the order the model is trained on. All are finite and non-negative.
FEATURE_COLUMNS: tuple[str, ...] = (
    "recency_days",  # days from the last purchase to the cutoff
    "tenure_days",  # days from the first purchase to the cutoff
    "frequency",  # number of distinct purchase days
    "n_orders",  # number of purchases (rows)
    "monetary_total",  # USD spent before the cutoff
    "monetary_mean",  # USD per purchase
    "monetary_max",  # largest single purchase, USD
    "cds_total",  # CDs bought
    "cds_per_order",  # CDs per purchase
    "orders_4w",  # purchases in the 4 weeks before the cutoff
    "orders_12w",
    "orders_26w",
    "spend_4w",  # USD in the 4 weeks before the cutoff
    "spend_12w",
    "spend_26w",
    "mean_gap_days",  # mean days between distinct purchase days; 0 with fewer than two
    "last_gap_days",  # days between the last two distinct purchase days; 0 with fewer than two
    "recency_ratio",  # recency_days / mean_gap_days (how overdue); 0 with fewer than two days
)
#: Columns every feature frame carries besides the features.
KEY_COLUMNS: tuple[str, ...] = ("customer_id", "cutoff")
#: Label columns: ``repurchase`` (Int8, 1/0, <NA> when not matured), horizon revenue (USD, NaN when
#: not matured) and whether the label exists.
LABEL_COLUMNS: tuple[str, ...] = (LABEL, REVENUE, "label_available")
#: Columns besides keys, features and labels (the slice).
EXTRA_COLUMNS: tuple[str, ...] = (CUSTOMER_TYPE,)

_WINDOWS = {"4w": 28, "12w": 84, "26w": 182}


def label_matured(cutoff: date, ingested_weeks: Iterable[str], horizon_days: int = 28) -> bool:
    """True when every ISO week of the horizon after ``cutoff`` is among ``ingested_weeks``."""
    have = set(ingested_weeks)
    return all(week in have for week in horizon_weeks(cutoff, horizon_days))


def build_features(
    transactions: pd.DataFrame,
    cutoff: date,
    *,
    label_available: bool,
    horizon_days: int = 28,
) -> pd.DataFrame:
    """Feature and label rows at ``cutoff``.

    Args:
        transactions: one row per purchase with ``customer_id`` (int), ``date`` (datetime64, day)
            ``number_of_cds`` (int) and ``dollar_value`` (float, USD).
        cutoff: a Monday; features use purchases with ``date < cutoff``.
        label_available: whether the horizon ``[cutoff, cutoff + horizon_days)`` has been ingested
            in full (see :func:`label_matured`); when False the label columns are missing values.
        horizon_days: label horizon in days.

    Returns:
        One row per customer with a purchase before ``cutoff``, sorted by ``customer_id``, with
        :data:`KEY_COLUMNS`, :data:`FEATURE_COLUMNS` (float64) and :data:`LABEL_COLUMNS`.

    Raises:
        ValueError: when ``cutoff`` is not a Monday.
    """
    check_cutoff(cutoff)
    t = pd.Timestamp(cutoff)
    dates = transactions["date"]
    past = transactions.loc[dates < t, ["customer_id", "date", "number_of_cds", "dollar_value"]]
    if past.empty:
        return _empty_frame()

    grouped = past.groupby("customer_id", sort=True)
    first = grouped["date"].min()
    last = grouped["date"].max()
    out = pd.DataFrame(index=first.index)
    out["recency_days"] = (t - last).dt.days.astype("float64")
    out["tenure_days"] = (t - first).dt.days.astype("float64")
    out["n_orders"] = grouped.size().astype("float64")
    out["monetary_total"] = grouped["dollar_value"].sum()
    out["monetary_mean"] = out["monetary_total"] / out["n_orders"]
    out["monetary_max"] = grouped["dollar_value"].max()
    out["cds_total"] = grouped["number_of_cds"].sum().astype("float64")
    out["cds_per_order"] = out["cds_total"] / out["n_orders"]

    for name, days in _WINDOWS.items():
        recent = past[past["date"] >= t - pd.Timedelta(days=days)].groupby("customer_id")
        out[f"orders_{name}"] = recent.size().reindex(out.index, fill_value=0).astype("float64")
        out[f"spend_{name}"] = recent["dollar_value"].sum().reindex(out.index, fill_value=0.0)

    # Gaps between distinct purchase days.
    days = past[["customer_id", "date"]].drop_duplicates().sort_values(["customer_id", "date"])
    gaps = days.groupby("customer_id")["date"].diff().dt.days
    days = days.assign(gap=gaps)
    out["frequency"] = days.groupby("customer_id").size().astype("float64")
    mean_gap = days.groupby("customer_id")["gap"].mean()
    last_gap = days.groupby("customer_id")["gap"].last()
    out["mean_gap_days"] = mean_gap.reindex(out.index).fillna(0.0)
    out["last_gap_days"] = last_gap.reindex(out.index).fillna(0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["recency_days"] / out["mean_gap_days"]
    out["recency_ratio"] = ratio.where(out["mean_gap_days"] > 0, 0.0)

    out = out[list(FEATURE_COLUMNS)].astype("float64")
    out.insert(0, "cutoff", pd.Timestamp(cutoff))
    out = out.reset_index()
    out[CUSTOMER_TYPE] = np.where(out["frequency"] >= 2, "returning", "new")

    if label_available:
        end = t + pd.Timedelta(days=horizon_days)
        horizon = transactions.loc[(dates >= t) & (dates < end)]
        revenue = horizon.groupby("customer_id")["dollar_value"].sum()
        rev = out["customer_id"].map(revenue).fillna(0.0).astype("float64")
        out[LABEL] = pd.array(
            out["customer_id"].isin(horizon["customer_id"]).astype("int8"), dtype="Int8"
        )
        out[REVENUE] = rev
        out["label_available"] = True
    else:
        out[LABEL] = pd.array([pd.NA] * len(out), dtype="Int8")
        out[REVENUE] = np.nan
        out["label_available"] = False
    return out


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="int64"),
            "cutoff": pd.Series(dtype="datetime64[ns]"),
            **{c: pd.Series(dtype="float64") for c in FEATURE_COLUMNS},
        }
    )
    frame[CUSTOMER_TYPE] = pd.Series(dtype="object")
    frame[LABEL] = pd.array([], dtype="Int8")
    frame[REVENUE] = pd.Series(dtype="float64")
    frame["label_available"] = pd.Series(dtype="bool")
    return frame


def weekly_cutoffs(first: date, last: date) -> list[date]:
    """Every Monday ``m`` with ``first <= m <= last``."""
    start = first + timedelta(days=(7 - first.weekday()) % 7)
    out = []
    while start <= last:
        out.append(start)
        start += timedelta(days=7)
    return out
