"""CDNOW repurchase: will a customer buy again within 28 days of a cutoff? (binary classification)

Data: the CDNOW master purchase log shipped in ``Lifetimes`` 0.11.3 (see :mod:`usecases.cdnow.source`).
Feed: one CSV of purchases per ISO week (``cdnow_YYYY-Www.csv``). Rows: one per customer with a
purchase before the cutoff (``entity_at_cutoff``); features from purchases strictly before the cutoff,
the label and the horizon revenue from ``[cutoff, cutoff + 28 days)`` (see
:mod:`usecases.cdnow.features`). Targeting: marketing contacts the top 10% of customers by score.
Registered under ``rollguard.usecases`` as ``cdnow`` in Rollguard's ``pyproject.toml``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

from rollguard.usecase import (
    FeatureSpec,
    History,
    LabelSpec,
    SliceSpec,
    TargetingSpec,
    TaskType,
    UseCase,
    ValueSpec,
)
from usecases.cdnow import features as _features
from usecases.cdnow import source as _source

_USD = "USD"


def _finite(series: pd.Series) -> pd.Series:
    return series.abs() < float("inf")


#: A landing file's purchases, coerced from text: the validation rules ingestion applies.
RECORD_SCHEMA = pa.DataFrameSchema(
    {
        "transaction_id": pa.Column("int64", coerce=True),
        "customer_id": pa.Column("int64", coerce=True),
        "date": pa.Column(
            pandas_engine.DateTime(to_datetime_kwargs={"format": "%Y-%m-%d"}), coerce=True
        ),
        "number_of_cds": pa.Column(
            "int64", pa.Check.ge(0, name="negative_value", error="is negative"), coerce=True
        ),
        "dollar_value": pa.Column(
            "float64",
            [
                pa.Check(_finite, name="bad_type", error="is not a finite number"),
                pa.Check.ge(0, name="negative_value", error="is negative"),
            ],
            coerce=True,
        ),
    },
    strict=True,
    ordered=True,
)

_F = FeatureSpec
FEATURES: tuple[FeatureSpec, ...] = (
    _F("recency_days", "numeric", "Days from the last purchase to the cutoff.", 20.0, "days", 0),
    _F("tenure_days", "numeric", "Days from the first purchase to the cutoff.", 150.0, "days", 0),
    _F("frequency", "numeric", "Number of distinct purchase days.", 3.0, "count", 0),
    _F("n_orders", "numeric", "Number of purchases.", 3.0, "count", 0),
    _F("monetary_total", "numeric", "USD spent before the cutoff.", 75.5, _USD, 0),
    _F("monetary_mean", "numeric", "USD per purchase.", 25.17, _USD, 0),
    _F("monetary_max", "numeric", "Largest single purchase, USD.", 40.0, _USD, 0),
    _F("cds_total", "numeric", "CDs bought.", 5.0, "count", 0),
    _F("cds_per_order", "numeric", "CDs per purchase.", 1.67, "count", 0),
    _F("orders_4w", "numeric", "Purchases in the 4 weeks before the cutoff.", 1.0, "count", 0),
    _F("orders_12w", "numeric", "Purchases in the 12 weeks before the cutoff.", 1.0, "count", 0),
    _F("orders_26w", "numeric", "Purchases in the 26 weeks before the cutoff.", 3.0, "count", 0),
    _F("spend_4w", "numeric", "USD in the 4 weeks before the cutoff.", 20.0, _USD, 0),
    _F("spend_12w", "numeric", "USD in the 12 weeks before the cutoff.", 20.0, _USD, 0),
    _F("spend_26w", "numeric", "USD in the 26 weeks before the cutoff.", 75.5, _USD, 0),
    _F(
        "mean_gap_days",
        "numeric",
        "Mean days between distinct purchase days; 0 with fewer than two.",
        65.0,
        "days",
        0,
    ),
    _F(
        "last_gap_days",
        "numeric",
        "Days between the last two distinct purchase days; 0 with fewer than two.",
        30.0,
        "days",
        0,
    ),
    _F(
        "recency_ratio",
        "numeric",
        "recency_days / mean_gap_days; 0 with fewer than two purchase days.",
        0.31,
        "",
        0,
    ),
)
assert tuple(f.name for f in FEATURES) == _features.FEATURE_COLUMNS  # noqa: S101 - import-time consistency check of constants


class CdnowRepurchase(UseCase):
    """The CDNOW repurchase use case (the default)."""

    name = "cdnow"
    title = "CDNOW repurchase"
    model_name = "cdnow-repurchase"
    task = TaskType.BINARY_CLASSIFICATION
    scoring_unit = "entity_at_cutoff"
    entity_column = "customer_id"
    record_schema = RECORD_SCHEMA
    record_id_column = "transaction_id"
    record_time_column = "date"
    file_prefix = "cdnow_"
    features = FEATURES
    label = LabelSpec(
        column=_features.LABEL,
        description="The customer buys again within 28 days after the cutoff (1) or not (0).",
        horizon_days=_features.HORIZON_DAYS,
    )
    value = ValueSpec(
        column=_features.REVENUE,
        description="Revenue of the customer in the 28 days after the cutoff.",
        unit=_USD,
    )
    slices = (
        SliceSpec(
            name="customer_type",
            column=_features.CUSTOMER_TYPE,
            description="new (one purchase day before the cutoff) or returning (two or more)",
        ),
    )
    targeting = TargetingSpec(
        budget=0.10,
        description="marketing contacts the top 10% of customers by score each week",
        subject="customers",
    )
    training_cutoffs = 8
    evaluation_cutoffs = 1

    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        """The CDNOW log (the packaged copy, or a user's file of the same shape), verified.

        Raises:
            rollguard.errors.DatasetError: see :func:`usecases.cdnow.source.load_dataset`.
        """
        records, resolved, digest = _source.load_dataset(path, expected_sha256)
        source = "user file" if path is not None else _source.PACKAGED_SOURCE
        info = _source.describe(records, resolved, digest, source)
        return History(records, resolved, digest, source, summary=info.__dict__)

    def build_rows(
        self, records: pd.DataFrame, cutoff: date, *, label_available: bool
    ) -> pd.DataFrame:
        """One row per customer at ``cutoff``; see :func:`usecases.cdnow.features.build_features`."""
        return _features.build_features(
            records,
            cutoff,
            label_available=label_available,
            horizon_days=self.label.horizon_days,
        )


#: The registered instance (entry point ``cdnow = "usecases.cdnow:USECASE"``).
USECASE = CdnowRepurchase()
