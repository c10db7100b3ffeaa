"""Point-in-time correctness of features and labels (property-based), and their basic values."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usecases.cdnow.features import FEATURE_COLUMNS, LABEL, REVENUE, build_features, label_matured

CUTOFF = date(1997, 6, 2)  # a Monday
T = pd.Timestamp(CUTOFF)


def purchases_between(lo: int, hi: int) -> st.SearchStrategy[tuple[int, int, int, float]]:
    """A purchase (customer, day offset from the cutoff in [lo, hi], CDs, USD)."""
    return st.tuples(
        st.integers(min_value=1, max_value=12),
        st.integers(min_value=lo, max_value=hi),
        st.integers(min_value=0, max_value=9),
        st.floats(min_value=0, max_value=500, allow_nan=False).map(lambda v: round(v, 2)),
    )


purchase = purchases_between(-200, 60)


def frame_of(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, len(rows) + 1, dtype="int64"),
            "customer_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "date": pd.to_datetime([T + pd.Timedelta(days=r[1]) for r in rows]).astype(
                "datetime64[ns]"
            ),
            "number_of_cds": pd.Series([r[2] for r in rows], dtype="int64"),
            "dollar_value": pd.Series([r[3] for r in rows], dtype="float64"),
        }
    )


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    base=st.lists(purchase, min_size=1, max_size=40),
    later=st.lists(purchases_between(0, 60), min_size=1, max_size=20),
)
def test_purchases_on_or_after_the_cutoff_never_change_features(base, later) -> None:
    before = build_features(frame_of(base), CUTOFF, label_available=False)
    after = build_features(frame_of(base + later), CUTOFF, label_available=False)
    pd.testing.assert_frame_equal(before, after)


@PROPS
@given(base=st.lists(purchase, min_size=1, max_size=40), data=st.data())
def test_changing_a_purchase_on_or_after_the_cutoff_never_changes_features(base, data) -> None:
    frame = frame_of(base)
    future = frame.index[frame["date"] >= T]
    if len(future) == 0:
        return
    i = data.draw(st.sampled_from(list(future)))
    changed = frame.copy()
    changed.loc[i, "dollar_value"] += 10
    changed.loc[i, "number_of_cds"] += 1
    changed.loc[i, "date"] += pd.Timedelta(days=data.draw(st.integers(0, 30)))
    cols = ["customer_id", *FEATURE_COLUMNS]
    pd.testing.assert_frame_equal(
        build_features(frame, CUTOFF, label_available=False)[cols],
        build_features(changed, CUTOFF, label_available=False)[cols],
    )


@PROPS
@given(
    base=st.lists(purchase, min_size=1, max_size=40),
    beyond=st.lists(purchases_between(28, 90), min_size=1, max_size=20),
)
def test_purchases_after_the_horizon_never_change_labels(base, beyond) -> None:
    before = build_features(frame_of(base), CUTOFF, label_available=True)
    after = build_features(frame_of(base + beyond), CUTOFF, label_available=True)
    pd.testing.assert_frame_equal(before, after)


@PROPS
@given(
    base=st.lists(purchases_between(-200, -1), min_size=1, max_size=40),
    offset=st.integers(0, 27),
    value=st.floats(0.01, 100).map(lambda v: round(v, 2)),
)
def test_a_purchase_inside_the_horizon_labels_only_its_customer(base, offset, value) -> None:
    frame = frame_of(base)
    customer = int(frame["customer_id"].iloc[0])
    before = build_features(frame, CUTOFF, label_available=True)
    after = build_features(
        frame_of(base + [(customer, offset, 1, value)]), CUTOFF, label_available=True
    )
    changed = before[LABEL].ne(after[LABEL]) | before[REVENUE].ne(after[REVENUE])
    assert set(before.loc[changed, "customer_id"]) <= {customer}
    row = after[after["customer_id"] == customer].iloc[0]
    assert row[LABEL] == 1
    assert row[REVENUE] == pytest.approx(value)
    pd.testing.assert_frame_equal(before[list(FEATURE_COLUMNS)], after[list(FEATURE_COLUMNS)])


def test_values_on_a_hand_checked_customer() -> None:
    # purchases 30 and 10 days before the cutoff, and one inside the horizon
    frame = frame_of(
        [(1, -30, 2, 10.0), (1, -10, 1, 30.0), (1, -10, 3, 20.0), (1, 5, 1, 7.5), (2, -100, 1, 5.0)]
    )
    out = build_features(frame, CUTOFF, label_available=True).set_index("customer_id")
    one = out.loc[1]
    assert one["recency_days"] == 10 and one["tenure_days"] == 30
    assert one["frequency"] == 2 and one["n_orders"] == 3
    assert one["monetary_total"] == 60 and one["monetary_mean"] == 20 and one["monetary_max"] == 30
    assert one["orders_4w"] == 2 and one["orders_12w"] == 3 and one["spend_4w"] == 50
    assert one["mean_gap_days"] == 20 and one["last_gap_days"] == 20
    assert one["recency_ratio"] == 0.5 and one["cds_per_order"] == 2
    assert one[LABEL] == 1 and one[REVENUE] == 7.5
    two = out.loc[2]
    assert two[LABEL] == 0 and two[REVENUE] == 0 and two["mean_gap_days"] == 0


def test_label_is_missing_not_zero_when_the_horizon_is_not_ingested() -> None:
    frame = frame_of([(1, -3, 1, 10.0), (1, 3, 1, 10.0)])
    out = build_features(frame, CUTOFF, label_available=False)
    assert out[LABEL].isna().all() and out[REVENUE].isna().all()
    assert not out["label_available"].any()


def test_features_are_finite_and_non_negative_on_real_data() -> None:
    from usecases.cdnow.source import load_dataset

    data, _, _ = load_dataset()
    out = build_features(data, date(1997, 9, 1), label_available=True)
    values = out[list(FEATURE_COLUMNS)].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert len(out) == data.loc[data["date"] < "1997-09-01", "customer_id"].nunique()


def test_label_matured_needs_every_horizon_week() -> None:
    weeks = ["1997-W23", "1997-W24", "1997-W25", "1997-W26"]
    assert label_matured(CUTOFF, weeks, 28)
    assert not label_matured(CUTOFF, weeks[:3], 28)
    assert not label_matured(CUTOFF + timedelta(days=7), weeks, 28)


def test_cutoff_must_be_a_monday() -> None:
    with pytest.raises(ValueError, match="is a Tuesday"):
        build_features(
            frame_of([(1, -3, 1, 1.0)]), CUTOFF + timedelta(days=1), label_available=False
        )
