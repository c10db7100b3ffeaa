"""Request and response bodies of the REST API (pydantic v2).

The feature row is generated from :data:`usecases.cdnow.features.FEATURE_COLUMNS`, the model input
contract: every feature is required, named, a finite JSON number in ``[0, 3e38]`` (float32 range); unknown keys are
refused; strings are never coerced to numbers. Rows are ``TypedDict`` objects (validated into plain
dicts, which is several times faster than model instances for 10,000-row batches).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypedDict

from usecases.cdnow.features import FEATURE_COLUMNS

_FEATURE_DOCS = {
    "recency_days": "Days from the last purchase to the cutoff.",
    "tenure_days": "Days from the first purchase to the cutoff.",
    "frequency": "Number of distinct purchase days.",
    "n_orders": "Number of purchases.",
    "monetary_total": "USD spent before the cutoff.",
    "monetary_mean": "USD per purchase.",
    "monetary_max": "Largest single purchase, USD.",
    "cds_total": "CDs bought.",
    "cds_per_order": "CDs per purchase.",
    "orders_4w": "Purchases in the 4 weeks before the cutoff.",
    "orders_12w": "Purchases in the 12 weeks before the cutoff.",
    "orders_26w": "Purchases in the 26 weeks before the cutoff.",
    "spend_4w": "USD in the 4 weeks before the cutoff.",
    "spend_12w": "USD in the 12 weeks before the cutoff.",
    "spend_26w": "USD in the 26 weeks before the cutoff.",
    "mean_gap_days": "Mean days between distinct purchase days; 0 with fewer than two.",
    "last_gap_days": "Days between the last two distinct purchase days; 0 with fewer than two.",
    "recency_ratio": "recency_days / mean_gap_days; 0 with fewer than two purchase days.",
}

#: A plausible returning customer (one row of the CDNOW snapshot at 1997-07-07).
EXAMPLE_ROW: dict[str, float] = {
    "recency_days": 20.0,
    "tenure_days": 150.0,
    "frequency": 3.0,
    "n_orders": 3.0,
    "monetary_total": 75.5,
    "monetary_mean": 25.17,
    "monetary_max": 40.0,
    "cds_total": 5.0,
    "cds_per_order": 1.67,
    "orders_4w": 1.0,
    "orders_12w": 1.0,
    "orders_26w": 3.0,
    "spend_4w": 20.0,
    "spend_12w": 20.0,
    "spend_26w": 75.5,
    "mean_gap_days": 65.0,
    "last_gap_days": 30.0,
    "recency_ratio": 0.31,
}
assert set(EXAMPLE_ROW) == set(FEATURE_COLUMNS)

#: Largest feature value accepted: XGBoost scores float32 inputs, and a larger double becomes
#: infinity there (``numpy.finfo(numpy.float32).max`` is about 3.4e38).
MAX_FEATURE_VALUE = 3.0e38

_Feature = Annotated[float, Field(ge=0, le=MAX_FEATURE_VALUE, allow_inf_nan=False, strict=True)]


def _feature_row_type() -> type:
    fields = {
        name: Annotated[_Feature, Field(description=_FEATURE_DOCS.get(name))]
        for name in FEATURE_COLUMNS
    }
    row = TypedDict("FeatureRow", fields)  # type: ignore[misc]
    row.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="forbid", strict=True, allow_inf_nan=False, title="FeatureRow"
    )
    return row


#: One customer's features, matched by name (key order is irrelevant).
FeatureRow = _feature_row_type()


def predict_request_model(max_rows: int) -> type[BaseModel]:
    """The request body ``{"rows": [FeatureRow, ...]}`` with 1 to ``max_rows`` rows."""
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"rows": [EXAMPLE_ROW]}]},
        ),
        rows=(
            list[FeatureRow],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=max_rows,
                # Stop at the first bad row: the API then collects a bounded number of errors
                # itself (api.app.parse_rows_body), whatever the number of bad rows.
                fail_fast=True,
                description=f"1 to {max_rows} feature rows; each is scored independently.",
            ),
        ),
    )


class PredictResponse(BaseModel):
    """Scores of one request, all by the one model version named here."""

    request_id: str = Field(description="Id of this request in the prediction log.")
    model_name: str
    model_version: str = Field(description="Registered-model version that produced every score.")
    scores: list[float] = Field(
        description="Probability of a repurchase within the horizon, in [0, 1], one per row, "
        "in request order."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b7c6f4e9a7d4a3f8d7c2f3e1b0a9c8d",
                    "model_name": "cdnow-repurchase",
                    "model_version": "3",
                    "scores": [0.42],
                }
            ]
        }
    )


class CustomerPredictionResponse(PredictResponse):
    """The score of one known customer from the newest feature snapshot."""

    customer_id: int
    cutoff: str = Field(
        description="Cutoff date (YYYY-MM-DD) of the snapshot the features are from."
    )
    features: dict[str, float]
    rank: int = Field(
        description="Position of this customer when every customer of the snapshot is scored by "
        "the serving version (1 = highest score; ties broken by snapshot order)."
    )
    n_customers: int = Field(description="Customers in the snapshot.")
    n_targeted: int = Field(
        description="Size of this week's targeted group: ceil(targeting_budget * n_customers)."
    )
    targeted: bool = Field(
        description="True when the customer is in this week's targeted group (rank <= n_targeted)."
    )
    targeting_budget: float = Field(
        description="Share of customers marketing targets each week (ROLLGUARD_TARGETING_BUDGET)."
    )


class PurchaseItem(BaseModel):
    """One accepted purchase of a customer."""

    transaction_id: int = Field(description="1-based line of the purchase in the source log.")
    date: str = Field(description="Day of the purchase (YYYY-MM-DD).")
    number_of_cds: int
    dollar_value: float = Field(description="USD.")


class CustomerHistoryResponse(BaseModel):
    """A customer's purchases in the ingested warehouse, newest first."""

    customer_id: int
    n_purchases: int = Field(description="All accepted purchases of the customer.")
    total_cds: int
    total_dollars: float = Field(description="USD over all purchases.")
    first_purchase: str = Field(description="YYYY-MM-DD")
    last_purchase: str = Field(description="YYYY-MM-DD")
    purchases: list[PurchaseItem] = Field(description="The newest `limit` purchases.")


class AliasMoveItem(BaseModel):
    """One attempt to move the champion alias (a row of the alias audit)."""

    moved_at: str = Field(description="UTC, ISO 8601.")
    action: str = Field(description="bootstrap, promote or rollback.")
    outcome: str = Field(description="moved, or refused (the alias did not move).")
    from_version: str | None
    to_version: str | None
    actor: str = Field(description="pipeline, guard, alert or human.")
    reason: str
    evidence: dict[str, Any] = Field(description="JSON evidence (gate report, alert, ...).")


class ModelHistoryResponse(BaseModel):
    """Recent champion alias moves of the served model name, newest first."""

    model_name: str
    moves: list[AliasMoveItem]


class Explanation(BaseModel):
    """Per-feature contributions of one row, in log-odds (XGBoost ``pred_contribs``).

    ``base_value + sum(contributions.values())`` equals the row's margin; ``score`` is the
    logistic of the margin (probability in [0, 1]).
    """

    score: float
    base_value: float
    contributions: dict[str, float]


class ExplainResponse(BaseModel):
    """Explanations of one request, all by the one model version named here."""

    request_id: str
    model_name: str
    model_version: str
    explanations: list[Explanation]


class ModelInfo(BaseModel):
    """The serving model: version, where it came from, and the gate's evidence."""

    model_name: str
    model_version: str
    run_id: str | None
    loaded_at: str = Field(description="When this process loaded it (UTC, ISO 8601).")
    feature_names: list[str]
    status: str | None = Field(description="Version status tag (candidate, champion, ...).")
    lineage: dict[str, str] = Field(description="Version tags that are not gate evidence.")
    gate: dict[str, str] = Field(description="Version tags whose key starts with 'gate'.")
    shadow_version: str | None = Field(description="Challenger scored in shadow, if any.")


class ErrorItem(BaseModel):
    """One problem with a request: where (dotted field path) and what."""

    field: str
    problem: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body of this API."""

    error: str = Field(description="Machine-readable kind, e.g. validation_error, not_ready.")
    message: str
    details: list[ErrorItem] = Field(default_factory=list)
    request_id: str | None = None


class ReloadResponse(BaseModel):
    """Outcome of an admin reload."""

    outcome: str = Field(description="swapped, unchanged, refused or registry_error.")
    model_version: str | None = Field(description="Version serving after the call.")
    candidate_version: str | None = None
    message: str


class Readiness(BaseModel):
    """Readiness detail (also returned with 503)."""

    ready: bool
    model_version: str | None
    registry: dict[str, Any]
    prediction_log: dict[str, Any]
