"""Request and response bodies of the REST API (pydantic v2), generated from the use case.

Everything the API knows about the problem comes from the :class:`rollguard.usecase.UseCase`
(``settings.usecase_spec``): :func:`feature_row_type` turns its feature declarations into the
``FeatureRow`` of a request (every feature required and named; unknown keys refused; no coercion):

* a numeric feature is a finite JSON number within the declared ``[minimum, maximum]``, and never
  beyond ``±3e38`` (:data:`MAX_FEATURE_VALUE`: XGBoost scores float32 inputs);
* a categorical feature is a JSON string (at most :data:`MAX_CATEGORY_CHARS` characters). A level
  the model does not know is accepted and scored as missing (XGBoost routes an unknown category
  like a missing value, which is also what training does with it: ``UseCase.feature_frame``); the
  response then carries a warning naming the field and the value (docs/api.md, "Unseen categories").

Rows are ``TypedDict`` objects (validated into plain dicts, several times faster than model
instances for 10,000-row batches). :func:`api_contract` bundles the row type, the request model,
the example row (the declared ``example`` values) and response models whose score descriptions
come from the task type (a probability in [0, 1], or a predicted value in the label's unit).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypedDict

from rollguard.usecase import FeatureSpec, UseCase

#: Largest feature magnitude accepted: XGBoost scores float32 inputs, and a larger double becomes
#: infinity there (``numpy.finfo(numpy.float32).max`` is about 3.4e38).
MAX_FEATURE_VALUE = 3.0e38
#: Longest categorical value accepted (characters).
MAX_CATEGORY_CHARS = 200
#: Most unseen-category warnings listed in one response (the count covers all of them).
MAX_WARNINGS = 50


def example_row(usecase: UseCase) -> dict[str, float | str]:
    """The declared ``example`` value of every feature (a number, or one of its categories)."""
    return {
        f.name: (str(f.example) if f.is_categorical else float(f.example)) for f in usecase.features
    }


def _bounds(spec: FeatureSpec) -> tuple[float, float]:
    low = -MAX_FEATURE_VALUE if spec.minimum is None else max(spec.minimum, -MAX_FEATURE_VALUE)
    high = MAX_FEATURE_VALUE if spec.maximum is None else min(spec.maximum, MAX_FEATURE_VALUE)
    return float(low), float(high)


def feature_description(spec: FeatureSpec) -> str:
    """One sentence for OpenAPI: the declaration's description, unit, bounds or levels."""
    if spec.is_categorical:
        levels = ", ".join(spec.categories)
        return (
            f"{spec.description} One of: {levels}. Another value is scored as missing and "
            "named in the response's warnings."
        )
    low, high = _bounds(spec)
    unit = f" Unit: {spec.unit}." if spec.unit else ""
    return f"{spec.description}{unit} Range [{low:g}, {high:g}]."


def _feature_type(spec: FeatureSpec) -> Any:
    if spec.is_categorical:
        return Annotated[
            str,
            Field(
                strict=True,
                max_length=MAX_CATEGORY_CHARS,
                description=feature_description(spec),
                examples=[str(spec.example)],
            ),
        ]
    low, high = _bounds(spec)
    return Annotated[
        float,
        Field(
            ge=low,
            le=high,
            allow_inf_nan=False,
            strict=True,
            description=feature_description(spec),
            examples=[float(spec.example)],
        ),
    ]


@functools.lru_cache(maxsize=16)
def feature_row_type(usecase: UseCase) -> type:
    """The ``FeatureRow`` TypedDict of ``usecase``: one required key per declared feature."""
    fields = {spec.name: _feature_type(spec) for spec in usecase.features}
    row = TypedDict("FeatureRow", fields)  # type: ignore[misc]
    row.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="forbid", strict=True, allow_inf_nan=False, title="FeatureRow"
    )
    return row


def predict_request_model(max_rows: int, usecase: UseCase) -> type[BaseModel]:
    """The request body ``{"rows": [FeatureRow, ...]}`` with 1 to ``max_rows`` rows."""
    row = feature_row_type(usecase)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"rows": [example_row(usecase)]}]},
        ),
        rows=(
            list[row],  # type: ignore[valid-type]
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


def score_description(usecase: UseCase) -> str:
    """What one score is, from the task type."""
    if usecase.is_classification:
        return f"Probability in [0, 1]: {usecase.label.description}"
    unit = f" in {usecase.label.unit}" if usecase.label.unit else ""
    return f"Predicted {usecase.label.column}{unit}: {usecase.label.description}"


def contribution_unit(usecase: UseCase) -> str:
    """The unit of SHAP contributions: log-odds (classification) or the label's unit."""
    if usecase.is_classification:
        return "log-odds"
    return usecase.label.unit or f"units of {usecase.label.column}"


class ErrorItem(BaseModel):
    """One problem with a request (or one warning about it): where (dotted field path) and what."""

    field: str
    problem: str


class PredictResponse(BaseModel):
    """Scores of one request, all by the one model version named here."""

    request_id: str = Field(description="Id of this request in the prediction log.")
    model_name: str
    model_version: str = Field(description="Registered-model version that produced every score.")
    scores: list[float] = Field(description="One score per row, in request order.")
    warnings: list[ErrorItem] = Field(
        default_factory=list,
        description=f"Unseen categories scored as missing (field rows.<i>.<feature>); at most "
        f"{MAX_WARNINGS} listed, then one line counting the rest. Empty when none.",
    )


class EntityPredictionResponse(PredictResponse):
    """The score of one known entity from the newest feature snapshot (fields named by the use
    case are added by :func:`api_contract`)."""

    cutoff: str = Field(
        description="Cutoff date (YYYY-MM-DD) of the snapshot the features are from."
    )
    features: dict[str, float | str | None]


class HistoryResponse(BaseModel):
    """An entity's raw records in the ingested warehouse, newest first (the entity id field is
    named by the use case and added by :func:`api_contract`)."""

    n_records: int = Field(description="All accepted records of the entity.")
    first: str = Field(description="Time of the oldest record (YYYY-MM-DD).")
    last: str = Field(description="Time of the newest record (YYYY-MM-DD).")
    totals: dict[str, float] = Field(
        description="Sum over all records of each numeric record column that is not a key."
    )
    records: list[dict[str, Any]] = Field(
        description="The newest `limit` records, columns of the use case's record schema."
    )


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
    """Per-feature contributions of one row (XGBoost ``pred_contribs``, TreeSHAP).

    ``base_value + sum(contributions.values())`` equals the row's margin: log-odds for a binary
    classifier (``score`` is its logistic), the predicted value for a regression (``score`` equals
    the margin).
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
    warnings: list[ErrorItem] = Field(default_factory=list)


class LiveInfo(BaseModel):
    """The live signals of the serving version (docs/api.md, "Live signals")."""

    enabled: bool = Field(description="False when ROLLGUARD_LIVE_SIGNALS is off.")
    window_rows: int | None = Field(description="Rows per version's live window.")
    min_rows: int | None = Field(description="Rows the window needs before figures appear.")
    rows: int = Field(description="Rows in this version's window now.")
    reference_version: str | None = Field(
        description="Version whose gate-time scores the live score PSI compares with (None: no "
        "score reference, no live score PSI)."
    )
    reference_source: str | None = Field(
        description="'gated' (the version's own) or 'replaced' (the champion it replaced)."
    )
    profiled_features: list[str] = Field(
        description="Features of the version's training profile (live feature figures)."
    )
    notes: list[str] = Field(description="Missing or malformed live tags, and what that stops.")


class ChampionStatus(BaseModel):
    """What the server knows of the ``champion`` alias (``api.lifecycle.ModelManager``)."""

    state: str = Field(
        description="ok, alias_missing, version_missing, registry_unreachable, load_refused, "
        "loading or unknown (not checked yet / no registry)."
    )
    reason: str | None = Field(description="Why the state is not ok, in words (None when ok).")
    since: str | None = Field(description="When the missing state started (UTC, ISO 8601).")
    alias_version: str | None = Field(
        description="The version the alias pointed at on the last registry answer."
    )
    audit: str = Field(
        description="Whether the alias target has a Rollguard alias_audit row: audited, "
        "unaudited (moved outside Rollguard), pending (first seen, grace period), unknown "
        "(store unreadable or not checked yet) or not_checked (no store configured)."
    )
    unaudited_version: str | None = Field(
        description="The version the alias was moved to outside Rollguard, while flagged."
    )
    unaudited_since: str | None = Field(description="When that move was flagged (UTC).")


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
    live: LiveInfo | None = Field(
        default=None, description="Live signals of this version (score reference, profile)."
    )
    champion: ChampionStatus | None = Field(
        default=None, description="The champion alias: missing, moved outside Rollguard, ..."
    )


class FeatureInfo(BaseModel):
    """One feature declaration, as the UI builds its form from it."""

    name: str
    kind: str = Field(description="numeric or categorical.")
    description: str
    example: float | str
    unit: str
    minimum: float | None
    maximum: float | None
    categories: list[str] = Field(description="Categorical: the known levels, else empty.")


class UseCaseInfo(BaseModel):
    """The declarations of the use case this server runs (``GET /v1/usecase``)."""

    name: str
    title: str
    task: str = Field(description="binary_classification or regression.")
    scoring_unit: str = Field(description="entity_at_cutoff or event.")
    entity_column: str
    subject: str = Field(description="Plural noun for one scored row (customers, bookings).")
    entity_route: str = Field(description="Path template of the known-entity prediction route.")
    history_route: str = Field(description="Path template of the entity history route.")
    score_description: str
    contribution_unit: str
    label: dict[str, Any] = Field(description="column, description, unit, minimum, maximum.")
    value: dict[str, Any] = Field(description="column, description, unit (the money unit).")
    targeting: dict[str, Any] = Field(description="budget, description, subject.")
    features: list[FeatureInfo]


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
    reason: str | None = Field(
        default=None, description="Why no model serves (503 only), e.g. 'alias_missing: ...'."
    )
    champion: ChampionStatus | None = None
    registry: dict[str, Any]
    prediction_log: dict[str, Any]


# --- the use case's contract ----------------------------------------------------------------------
@dataclass(frozen=True)
class ApiContract:
    """Everything request- and response-shaped that the API derives from one use case.

    Attributes:
        usecase: the use case.
        row_type: the ``FeatureRow`` TypedDict.
        request: the predict/explain body model.
        example: the example row (declared ``example`` values).
        predict_response, entity_response, explain_response: response models with the use
            case's wording (score meaning, entity id field, realized label field).
        entity_route, history_route: ``/v1/{subject}/{<entity_column>}/prediction`` and
            ``.../history``.
    """

    usecase: UseCase
    row_type: type
    request: type[BaseModel]
    example: dict[str, float | str]
    predict_response: type[BaseModel]
    entity_response: type[BaseModel]
    explain_response: type[BaseModel]
    history_response: type[BaseModel]
    entity_route: str
    history_route: str

    def info(self) -> UseCaseInfo:
        """The declarations as JSON for ``GET /v1/usecase``."""
        uc = self.usecase
        return UseCaseInfo(
            name=uc.name,
            title=uc.title,
            task=uc.task.value,
            scoring_unit=uc.scoring_unit,
            entity_column=uc.entity_column,
            subject=uc.targeting.subject,
            entity_route=self.entity_route,
            history_route=self.history_route,
            score_description=score_description(uc),
            contribution_unit=contribution_unit(uc),
            label={
                "column": uc.label.column,
                "description": uc.label.description,
                "unit": uc.label.unit,
                "minimum": uc.label.minimum,
                "maximum": uc.label.maximum,
                "horizon_days": uc.label.horizon_days,
            },
            value={
                "column": uc.value.column,
                "description": uc.value.description,
                "unit": uc.value.unit,
            },
            targeting={
                "budget": uc.targeting.budget,
                "description": uc.targeting.description,
                "subject": uc.targeting.subject,
                "applies": uc.is_classification,
            },
            features=[
                FeatureInfo(
                    name=f.name,
                    kind=f.kind,
                    description=f.description,
                    example=f.example,
                    unit=f.unit,
                    minimum=f.minimum,
                    maximum=f.maximum,
                    categories=list(f.categories),
                )
                for f in uc.features
            ],
        )


def count_field(usecase: UseCase) -> str:
    """Name of the entity response's snapshot size field: ``n_<subject>`` (``n_customers``)."""
    return "n_" + re.sub(r"\W+", "_", usecase.targeting.subject.strip().lower())


def _entity_response(usecase: UseCase) -> type[BaseModel]:
    subject = usecase.targeting.subject
    fields: dict[str, Any] = {
        usecase.entity_column: (int, Field(description=f"Id of the scored row ({subject}).")),
    }
    if usecase.is_classification:
        fields.update(
            rank=(
                int,
                Field(
                    description=f"Position among all {subject} of the snapshot scored by the "
                    "serving version (1 = highest score; ties broken by snapshot order)."
                ),
            ),
            **{count_field(usecase): (int, Field(description=f"{subject} in the snapshot."))},
            n_targeted=(
                int,
                Field(
                    description=f"Size of this week's targeted group: ceil(budget * {count_field(usecase)})."
                ),
            ),
            targeted=(bool, Field(description="rank <= n_targeted.")),
            targeting_budget=(
                float,
                Field(
                    description=f"Share of {subject} targeted each week: "
                    f"{usecase.targeting.description}."
                ),
            ),
        )
    else:
        unit = f" ({usecase.label.unit})" if usecase.label.unit else ""
        fields.update(
            label_available=(bool, Field(description="Whether the realized label has matured.")),
            **{
                usecase.label.column: (
                    float | None,
                    Field(description=f"Realized {usecase.label.column}{unit} when matured."),
                )
            },
        )
    return create_model("EntityPrediction", __base__=EntityPredictionResponse, **fields)


@functools.lru_cache(maxsize=16)
def api_contract(usecase: UseCase, max_rows: int) -> ApiContract:
    """The request/response contract of ``usecase`` with ``max_rows`` rows per request."""
    scores = (list[float], Field(description=score_description(usecase) + " One per row."))
    subject = usecase.targeting.subject
    base = f"/v1/{subject}/{{{usecase.entity_column}}}"
    return ApiContract(
        usecase=usecase,
        row_type=feature_row_type(usecase),
        request=predict_request_model(max_rows, usecase),
        example=example_row(usecase),
        predict_response=create_model("Prediction", __base__=PredictResponse, scores=scores),
        entity_response=_entity_response(usecase),
        explain_response=create_model(
            "Explanations",
            __base__=ExplainResponse,
            __doc__=f"Contributions in {contribution_unit(usecase)}; base_value + their sum is "
            "the margin of each row.",
        ),
        history_response=create_model(
            "EntityHistory",
            __base__=HistoryResponse,
            **{usecase.entity_column: (int, Field(description=f"Id of one of the {subject}."))},
        ),
        entity_route=f"{base}/prediction",
        history_route=f"{base}/history",
    )
