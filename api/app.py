"""The FastAPI application of the model server (routes are thin: read the serving model once,
call one core function, record the result).

Routes (see docs/api.md): ``POST /v1/predict``, ``POST /v1/explain``, ``GET /v1/usecase``,
``GET /v1/{subject}/{id}/prediction`` and ``GET /v1/{subject}/{id}/history`` (named by the use
case: ``/v1/customers/{customer_id}/...`` for a use case whose subject is customers), ``GET /v1/model``, ``GET /v1/model/history``,
``POST /v1/admin/reload`` (bearer token), ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
Request and response bodies are generated from the use case (``settings.usecase_spec``;
:func:`api.schemas.api_contract`); nothing here names a use case's column.

Errors are JSON (:class:`api.schemas.ErrorResponse`) with a machine-readable ``error``, a
``message`` and per-field ``details``; no response carries a stack trace.
"""

import email.message
import functools
import gc
import hmac
import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as PathLib
from typing import Annotated, Any

import anyio
import fastapi_offline
import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api.batching import MicroBatcher
from api.entities import NoSnapshot, SnapshotFeatures, Targeting, UnknownEntity
from api.history import NoRecords, RecordHistory, StoreUnavailable, recent_alias_moves
from api.keys import CURRENT_KEY_ID, HEADER, KeyGate, KeyPolicy
from api.lifecycle import ModelManager, configure_mlflow_http
from api.live import LiveMonitor, read_references
from api.metrics import CLIENT_CLOSED_REQUEST, ServingMetrics
from api.middleware import MetricsMiddleware
from api.model import NonFiniteScore, Row, ServingModel, Unseen
from api.predlog import LoggedRequest, PredictionLog, adopt_shared_spool
from api.schemas import (
    MAX_FEATURE_VALUE,
    MAX_WARNINGS,
    ApiContract,
    ErrorResponse,
    LiveInfo,
    ModelHistoryResponse,
    ModelInfo,
    Readiness,
    ReloadResponse,
    UseCaseInfo,
    api_contract,
    contribution_unit,
    count_field,
    score_description,
)
from api.workers import refuse_multiple_workers, refuse_start
from rollguard.apikeys import KeyVerifier, store_lookup
from rollguard.asgi import BodySizeLimitMiddleware, RequestIdMiddleware, current_request_id
from rollguard.errors import RollguardError, describe_validation_error
from rollguard.home import ensure_home_location
from rollguard.mlflow_client import apply_mlflow_credentials
from rollguard.settings import Settings, get_settings
from rollguard.store import open_store

log = logging.getLogger("rollguard.api")

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Body larger than the configured limit."},
    415: {"model": ErrorResponse, "description": "A POST body whose Content-Type is not JSON."},
    422: {
        "model": ErrorResponse,
        "description": "A field is missing, extra, mistyped or out of range.",
    },
    500: {"model": ErrorResponse, "description": "The model returned an invalid score (counted)."},
    503: {"model": ErrorResponse, "description": "No model loaded yet (registry unreachable?)."},
}

_PROBLEMS = {
    "missing": "field required",
    "extra_forbidden": "unexpected field (not a model feature)",
    "finite_number": "must be a finite number (no NaN or infinity)",
    "float_type": "must be a JSON number",
    "string_type": "must be a JSON string (a category)",
    "too_short": "must hold at least one row",
}


#: A bound at least this large is an internal limit (an id's 2**62), stated as "number too large".
_INTERNAL_BOUND = 2**53


def _number_bound(kind: str, ctx: dict[str, Any]) -> str | None:
    """A path/query number bound in Rollguard's words ("must be at most 1000")."""
    words = {"le": "at most", "ge": "at least", "lt": "less than", "gt": "greater than"}
    for key, phrase in words.items():
        if key in ctx and kind.startswith(("less_than", "greater_than")):
            bound = ctx[key]
            if abs(float(bound)) >= _INTERNAL_BOUND:
                return "number too large" if key in ("le", "lt") else "number too small"
            return f"must be {phrase} {bound}"
    return None


def _own_words(error: dict[str, Any]) -> str:
    """Any validation error in Rollguard's words: never pydantic's message, which names internal
    classes ("instance of PredictRequestEnvelope") and limits."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in _PROBLEMS:
        return _PROBLEMS[kind]
    bound = _number_bound(kind, ctx)
    if bound is not None:
        return bound
    if kind in ("model_type", "model_attributes_type", "dict_type", "typed_dict_type"):
        loc = tuple(error.get("loc", ()))
        if loc in ((), ("body",)):
            return "must be a JSON object with a 'rows' list"
        return "must be a JSON object"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    if kind in ("int_parsing_size", "float_parsing_size"):
        return "number too large"
    if kind in ("float_parsing",):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("list_type", "tuple_type"):
        return "must be a JSON list"
    if kind == "too_long":
        return f"must hold at most {ctx.get('max_length')} items"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return "does not have the expected format"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', 'the documented values')}"
    return "invalid value"


def _bound_problem(error: dict[str, Any]) -> str | None:
    """The feature-bound wording: the declared bound, and why 3e38 when that is the limit."""
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    if kind == "greater_than_equal":
        bound = float(ctx.get("ge", 0))
        if bound <= -MAX_FEATURE_VALUE:
            return "must be >= -3e38 (the model scores float32 values)"
        return f"must be >= {bound:g}"
    if kind == "less_than_equal":
        bound = float(ctx.get("le", MAX_FEATURE_VALUE))
        if bound >= MAX_FEATURE_VALUE:
            return "must be <= 3e38 (the model scores float32 values)"
        return f"must be <= {bound:g}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    return None


def error_body(
    status: int,
    error: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the one shape this API uses. Every error carries a request id
    (the request's own, :func:`rollguard.asgi.current_request_id`, when the caller passes none)
    in the body and the ``X-Request-ID`` header, so a person can quote it and find the log line."""
    request_id = request_id or current_request_id()
    return JSONResponse(
        {"error": error, "message": message, "details": details or [], "request_id": request_id},
        status_code=status,
        headers={**(headers or {}), "X-Request-ID": request_id},
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def validation_details(errors: list[dict[str, Any]], limit: int = 50) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "rows.0.recency_days", "problem": "..."}]`` (first
    ``limit``), without echoing the input values."""
    out = []
    for e in errors[:limit]:
        in_body = tuple(e.get("loc", ()))[:1] == ("body",)
        # The feature-row wording (float32 range, >= 0) is for the body's features only; path and
        # query parameters state their own bounds (an internal one is "number too large").
        problem = (_bound_problem(e) if in_body else None) or _own_words(e)
        if e.get("type") == "too_long":
            problem = f"too many rows: at most {(e.get('ctx') or {}).get('max_length')}"
        if e.get("type") == "duplicate_key":
            problem = "duplicate key: it appears more than once in this object"
        if e.get("type") == "json_invalid":
            # loc is ("body", <character offset>): name the body and say where it breaks.
            loc = tuple(e.get("loc", ()))
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            reason = (e.get("ctx") or {}).get("error", "")
            out.append(
                {
                    "field": "body",
                    "problem": f"not valid JSON{where}" + (f": {reason}" if reason else ""),
                }
            )
            continue
        out.append({"field": _field(tuple(e.get("loc", ()))), "problem": problem})
    return out


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json`` (parameters ignored), as FastAPI
    decides whether to parse a body."""
    if not content_type:
        return False
    if content_type == "application/json":  # the common case, without a header parser
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


#: Most validation errors collected for one body (the answer lists at most 50 anyway).
MAX_BODY_ERRORS = 50


def _json_error(loc: tuple[Any, ...], reason: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": loc,
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": reason},
            }
        ]
    )


def _too_many_fields(loc: tuple[Any, ...], n: int, allowed: int) -> dict[str, Any]:
    return {
        "type": "too_many_fields",
        "loc": loc,
        "msg": f"an object of {n} fields; {allowed} are expected",
        "input": None,
    }


@functools.lru_cache(maxsize=8)
def _envelope(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with its rows left unvalidated (same row-count limits, same extra="forbid")."""
    return create_model(  # type: ignore[no-any-return, call-overload]
        f"{model.__name__}Envelope",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[Any], model.model_fields["rows"]),
    )


@functools.lru_cache(maxsize=8)
def _row_adapter(model: type[BaseModel]) -> tuple[TypeAdapter[Any], int]:
    """The row validator of ``model`` (its ``rows`` items) and the number of features per row."""
    row_type = model.model_fields["rows"].annotation.__args__[0]  # type: ignore[union-attr]
    return TypeAdapter(row_type), len(row_type.__annotations__)


class _KeyedObject(dict[str, Any]):
    """A JSON object read by ``json.loads`` that remembers its repeated keys (JSON allows them;
    ``json`` and pydantic keep the last value, which would silently score another row)."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates: list[str] = []
        if len(self) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen and key not in self.duplicates:
                    self.duplicates.append(key)
                seen.add(key)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """``object_pairs_hook``: a plain dict, or a :class:`_KeyedObject` when a key repeats."""
        obj = dict(pairs)
        return obj if len(obj) == len(pairs) else cls(pairs)

    def duplicate_errors(self, loc: tuple[Any, ...]) -> list[dict[str, Any]]:
        """One ``duplicate_key`` validation error per repeated key, located at the key."""
        return [
            {"type": "duplicate_key", "loc": (*loc, key), "msg": "duplicate key", "input": None}
            for key in self.duplicates
        ]


def parse_rows_body(
    model: type[BaseModel], body: bytes, content_type: str | None
) -> list[dict[str, Any]]:
    """Validate a predict/explain body and return its rows (dicts of feature name to a float, or
    a string for a categorical feature).

    Fast path: pydantic-core parses and validates the JSON bytes in one pass (for a 10,000-row
    body about half the time of ``json.loads`` followed by validation, as FastAPI does; see
    ``benchmarks/bench_api.py``); ``model``'s rows are validated with ``fail_fast``, so a bad
    body stops at its first bad row. A failing body is then read the way FastAPI reads one
    (``json.loads``, which also reads NaN and infinity so that validation names their field),
    its envelope validated, and its rows one by one until :data:`MAX_BODY_ERRORS` errors: the
    work on a bad body is bounded by its size, whatever the number of errors in it.

    Raises:
        UnsupportedMediaType: the content type is not JSON (answered 415).
        RequestValidationError: the body is missing or not valid (422, field and problem per
            error; locations start with ``body``), including a key repeated in one object
            (type ``duplicate_key``, located at the key: ``("body", "rows", 3, "recency_days")``).
    """
    if not _is_json(content_type):
        raise UnsupportedMediaType(content_type or "")
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    # pydantic reports every unknown key of an object, so one object of 700,000 keys (an 8 MB
    # body) costs seconds of error building. Such bodies skip the fast path: a key/value pair per
    # ':' and an object per '{' (a valid body has rows * 18 + 1 and rows + 1) is a cheap bound.
    adapter, n_features = _row_adapter(model)
    # (A ':' or '{' inside a categorical string only makes a body take the standard path.)
    colons = body.count(b":")
    if colons <= (n_features + 1) * body.count(b"{") + MAX_BODY_ERRORS:
        try:
            rows = model.model_validate_json(body).rows  # type: ignore[attr-defined]
        except ValidationError:
            pass
        else:
            # pydantic keeps the last of duplicate keys. Every row holds all n_features keys, so
            # a body without duplicates has exactly one ':' per key (more only from a ':' inside
            # a string): then nothing else needs checking; otherwise the standard path decides.
            if colons == 1 + len(rows) * n_features:
                return rows  # type: ignore[no-any-return]
    try:
        value = json.loads(body, object_pairs_hook=_KeyedObject.from_pairs)
    except json.JSONDecodeError as exc:
        raise _json_error(("body", exc.pos), exc.msg) from None
    except UnicodeDecodeError as exc:
        raise _json_error(("body",), f"not valid text in UTF-8, -16 or -32: {exc.reason}") from None
    except RecursionError:
        raise _json_error(("body",), "nested too deeply") from None
    except ValueError:  # an integer literal with more than 4,300 digits (Python's own limit)
        raise _json_error(("body",), "a number with too many digits") from None
    errors: list[dict[str, Any]] = []
    if isinstance(value, _KeyedObject):
        errors.extend(value.duplicate_errors(()))
    if isinstance(value, dict) and len(value) > 1 + MAX_BODY_ERRORS:
        raise RequestValidationError([_too_many_fields(("body",), len(value), 1)])
    try:
        rows = _envelope(model).model_validate(value).rows  # type: ignore[attr-defined]
    except ValidationError as exc:
        errors.extend(exc.errors(include_url=False, include_input=False))
        rows = value.get("rows") if isinstance(value, dict) else None
        rows = rows if isinstance(rows, list) else []
    for i, row in enumerate(rows):
        if len(errors) >= MAX_BODY_ERRORS:
            break
        if isinstance(row, dict) and len(row) > n_features + MAX_BODY_ERRORS:
            errors.append(_too_many_fields(("rows", i), len(row), n_features))
            continue
        if isinstance(row, _KeyedObject):
            errors.extend(row.duplicate_errors(("rows", i)))
        try:
            adapter.validate_python(row)
        except ValidationError as exc:
            errors.extend(
                {**e, "loc": ("rows", i, *e["loc"])}
                for e in exc.errors(include_url=False, include_input=False)
            )
        except RecursionError:
            errors.append(
                {
                    "type": "json_invalid",
                    "loc": ("rows", i),
                    "msg": "nested too deeply",
                    "input": None,
                }
            )
    if not errors:  # the fast path refused what the standard path accepts: trust the latter
        return model.model_validate(value).rows  # type: ignore[attr-defined,no-any-return]
    raise RequestValidationError(
        [{**e, "loc": ("body", *e["loc"])} for e in errors[:MAX_BODY_ERRORS]]
    )


class UnsupportedMediaType(Exception):
    """A POST body whose Content-Type is not JSON; ``args[0]`` is the content type given."""


class DirectRoute(APIRoute):
    """A route whose endpoint takes the :class:`Request` and returns a :class:`Response` itself.

    FastAPI still documents it from the decorator (summary, ``responses``, ``response_model``,
    ``openapi_extra`` for the body), but skips dependency resolution and body parsing for it:
    the endpoint validates its body with :func:`parse_rows_body`. Uses FastAPI's documented
    extension point, a custom ``APIRoute`` with its own ``get_route_handler``. Measured with
    ``benchmarks/bench_api.py``: the hot route answers single-row requests with less framework
    work per request than a FastAPI-resolved ``Request`` parameter.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"DirectRoute needs an async endpoint, got {endpoint!r}")
        return endpoint  # type: ignore[no-any-return]


class _LazyStore:
    """The monitoring store engine, opened on first use (and again after a failed open)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Any = None

    def engine(self) -> Any:
        """The engine.

        Raises:
            StoreUnavailable: the store cannot be opened (down, or an older schema revision).
        """
        if self._engine is None:
            try:
                self._engine = open_store(self._settings)
            except Exception as exc:  # noqa: BLE001 - any failure is "unavailable" to a reader
                raise StoreUnavailable(f"the monitoring store cannot be opened: {exc}") from exc
        return self._engine


@dataclass
class _Server:
    """What the routers share: settings, the use case's contract, the model manager, the
    prediction log, metrics, and the readers of snapshots, records and the store."""

    settings: Settings
    contract: ApiContract
    manager: ModelManager
    prediction_log: PredictionLog
    metrics: ServingMetrics
    batcher: MicroBatcher
    snapshots: SnapshotFeatures
    targeting: Targeting
    records: RecordHistory
    store: _LazyStore
    live: LiveMonitor | None = None

    def observe(
        self,
        model: ServingModel,
        matrix: np.ndarray,
        scores: np.ndarray,
        unseen: list[Unseen],
        rows: list[Row],
    ) -> None:
        """Hand scored rows to the live signals (a no-op when they are off; never raises)."""
        if self.live is not None:
            self.live.observe(model, matrix, scores, unseen, rows)

    async def read_rows(self, request: Request) -> list[dict[str, Any]]:
        """The validated ``rows`` of a predict/explain body (see :func:`parse_rows_body`)."""
        return parse_rows_body(
            self.contract.request, await request.body(), request.headers.get("content-type")
        )

    def not_ready(self) -> JSONResponse:
        self.metrics.prediction_errors.labels(reason="not_ready").inc()
        detail = self.manager.unavailable_reason()
        return error_body(
            503,
            "not_ready",
            f"no model is serving yet ({self.settings.model_name}@champion): {detail}",
            headers={"Retry-After": str(max(1, math.ceil(self.settings.api_poll_seconds)))},
        )

    def invalid_score(self, model: ServingModel, exc: Exception, request_id: str) -> JSONResponse:
        self.metrics.prediction_errors.labels(reason="non_finite_score").inc()
        log.error("model %s returned an invalid score: %s", model.version, exc)
        return error_body(
            500,
            "invalid_model_output",
            f"model version {model.version} returned an invalid score",
            request_id=request_id,
        )


def unseen_warnings(unseen: list[Unseen], model: ServingModel) -> list[dict[str, str]]:
    """Warnings for unseen categories: field ``rows.<i>.<feature>`` and the value; at most
    :data:`api.schemas.MAX_WARNINGS`, then one line counting the rest."""
    out = []
    for i, name, value in unseen[:MAX_WARNINGS]:
        known = (model.categories or {}).get(name, ())
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        out.append(
            {
                "field": f"rows.{i}.{name}",
                "problem": f"unseen category {value[:60]!r}, scored as missing (known: {shown})",
            }
        )
    if len(unseen) > MAX_WARNINGS:
        out.append(
            {"field": "rows", "problem": f"{len(unseen) - MAX_WARNINGS} more unseen categories"}
        )
    return out


def _json_response(payload: dict[str, Any], model: ServingModel) -> Response:
    return Response(
        pydantic_core.to_json(payload),
        media_type="application/json",
        headers={"X-Model-Version": model.version, "X-Request-ID": payload["request_id"]},
    )


def _direct_post(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``@router.post`` for an endpoint served through :class:`DirectRoute`."""

    def register(endpoint: Any) -> Any:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=DirectRoute, **kwargs
        )
        return endpoint

    return register


_ROWS_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
}


def scoring_router(srv: _Server) -> APIRouter:
    """``POST /v1/predict`` and ``POST /v1/explain`` (bodies parsed by :func:`parse_rows_body`)."""
    router = APIRouter(tags=["predictions"])
    contract, manager = srv.contract, srv.manager
    uc = contract.usecase

    @_direct_post(
        router,
        "/v1/predict",
        response_model=contract.predict_response,
        responses=_ERRORS,
        summary="Score one or many feature rows",
        openapi_extra=_ROWS_BODY_OPENAPI,
        description=f"{score_description(uc)} Features are matched by name; the response names "
        "the model version that produced every score.",
    )
    async def predict(request: Request) -> Response:
        rows = await srv.read_rows(request)
        model = manager.current
        if model is None:
            return srv.not_ready()
        request_id = current_request_id()
        matrix, unseen = model.encode(rows)
        try:
            scores = await srv.batcher.predict(model, matrix)
        except NonFiniteScore as exc:
            return srv.invalid_score(model, exc, request_id)
        srv.prediction_log.submit(
            LoggedRequest(
                request_id,
                datetime.now(UTC),
                model.name,
                model.version,
                rows,
                scores,
                key_id=CURRENT_KEY_ID.get(),
            )
        )
        srv.metrics.predictions.labels(model_version=model.version).inc(len(rows))
        srv.observe(model, matrix, scores, unseen, rows)
        return _json_response(
            {
                "request_id": request_id,
                "model_name": model.name,
                "model_version": model.version,
                "scores": scores.tolist(),
                "warnings": unseen_warnings(unseen, model) if unseen else [],
            },
            model,
        )

    @_direct_post(
        router,
        "/v1/explain",
        response_model=contract.explain_response,
        responses=_ERRORS,
        summary=f"Per-feature contributions (XGBoost pred_contribs, {contribution_unit(uc)})",
        openapi_extra=_ROWS_BODY_OPENAPI,
        description=f"For each row: score, base value and one contribution per feature, in "
        f"{contribution_unit(uc)}; ``base_value + sum(contributions)`` is the row's margin "
        "(TreeSHAP values computed by XGBoost itself, Lundberg et al. 2020; categorical "
        "features included). Explanations are not written to the prediction log and not "
        "counted in the live signals.",
    )
    async def explain(request: Request) -> Response:
        rows = await srv.read_rows(request)
        model = manager.current
        if model is None:
            return srv.not_ready()
        request_id = current_request_id()
        matrix, unseen = model.encode(rows)
        try:
            contribs, bias = model.explain(matrix)
            scores = model.predict(matrix)
        except NonFiniteScore as exc:
            return srv.invalid_score(model, exc, request_id)
        names = model.feature_names
        explanations = [
            {"score": s, "base_value": b, "contributions": dict(zip(names, c, strict=True))}
            for s, b, c in zip(scores.tolist(), bias.tolist(), contribs.tolist(), strict=True)
        ]
        return _json_response(
            {
                "request_id": request_id,
                "model_name": model.name,
                "model_version": model.version,
                "explanations": explanations,
                "warnings": unseen_warnings(unseen, model) if unseen else [],
            },
            model,
        )

    return router


def _entity_payload(srv: _Server, found: Any, model: ServingModel) -> dict[str, Any]:
    """The use-case fields of the entity route: targeting (classification) or the realized
    label (regression)."""
    uc = srv.contract.usecase
    if not uc.is_classification:
        return {"label_available": found.label_available, uc.label.column: found.label}
    position = srv.targeting.position(found.entity_id, model)
    return {
        "rank": position.rank,
        count_field(uc): position.n_entities,
        "n_targeted": position.n_targeted,
        "targeted": position.targeted,
        "targeting_budget": position.budget,
    }


def entity_router(srv: _Server) -> APIRouter:
    """``GET /v1/{subject}/{id}/prediction`` (``entity_at_cutoff`` and ``event`` use cases alike:
    the row of the newest snapshot) and ``GET /v1/{subject}/{id}/history`` (when the raw records
    carry the entity key)."""
    router = APIRouter()
    contract, manager = srv.contract, srv.manager
    uc = contract.usecase
    key = uc.entity_column
    subject = uc.targeting.subject
    entity_id_type = Annotated[int, Path(ge=0, le=2**62, description=f"The {key} of one row.")]
    unknown_kind = "unknown_" + count_field(uc).removeprefix("n_").rstrip("s")

    def prediction(entity_id: int) -> Response:
        model = manager.current
        if model is None:
            return srv.not_ready()
        try:
            found = srv.snapshots.lookup(entity_id)
        except NoSnapshot as exc:  # a step has not run yet: the client's request cannot be met
            return error_body(409, "no_snapshot", str(exc))
        except UnknownEntity as exc:
            problem = "not in the newest snapshot"
            return error_body(404, unknown_kind, str(exc), [{"field": key, "problem": problem}])
        request_id = current_request_id()
        rows = [found.features]
        matrix, unseen = model.encode(rows)
        try:
            scores = model.predict(matrix)
            extra = _entity_payload(srv, found, model)
        except NonFiniteScore as exc:
            return srv.invalid_score(model, exc, request_id)
        srv.prediction_log.submit(
            LoggedRequest(
                request_id,
                datetime.now(UTC),
                model.name,
                model.version,
                rows,
                scores,
                entity_ids=(found.entity_id,),
                key_id=CURRENT_KEY_ID.get(),
            )
        )
        srv.metrics.predictions.labels(model_version=model.version).inc(1)
        srv.observe(model, matrix, scores, unseen, rows)
        payload = {
            "request_id": request_id,
            "model_name": model.name,
            "model_version": model.version,
            "scores": scores.tolist(),
            "warnings": unseen_warnings(unseen, model) if unseen else [],
            key: found.entity_id,
            "cutoff": found.cutoff,
            "features": found.features,
            **extra,
        }
        return _json_response(payload, model)

    # The path parameter is named after the entity column (``{customer_id}``), so the endpoint
    # signature is built for it.
    prediction_endpoint = _with_path_parameter(prediction, key, entity_id_type)
    router.add_api_route(
        contract.entity_route,
        prediction_endpoint,
        methods=["GET"],
        response_model=contract.entity_response,
        responses={
            404: {"model": ErrorResponse, "description": f"Unknown {key}."},
            409: {
                "model": ErrorResponse,
                "description": "No feature snapshot yet: the message names the step to run "
                "(`rollguard score`).",
            },
            **_ERRORS,
        },
        summary=f"Score a known row of {subject} from the newest feature snapshot",
        description=f"Reads the row of this {key} from the newest snapshot "
        "(``warehouse/features/cutoff=YYYY-MM-DD.parquet``) and scores it. "
        + (
            "Adds its place in this week's targeted group."
            if uc.is_classification
            else f"Adds the realized {uc.label.column} when it has matured."
        ),
        tags=["predictions"],
    )
    if RecordHistory.supported(uc):
        router.add_api_route(
            contract.history_route,
            _with_path_parameter(_history_endpoint(srv, unknown_kind), key, entity_id_type),
            methods=["GET"],
            response_model=contract.history_response,
            responses={
                404: {"model": ErrorResponse, "description": f"No record of this {key}."},
                422: _ERRORS[422],
                503: {"model": ErrorResponse, "description": "Monitoring store unreachable."},
            },
            summary=f"The raw records of one of the {subject} in the ingested warehouse",
            tags=[subject],
        )
    return router


def _history_endpoint(srv: _Server, unknown_kind: str) -> Callable[..., Any]:
    key = srv.contract.usecase.entity_column

    def history(
        entity_id: int,
        limit: Annotated[
            int, Query(ge=1, le=1000, description="Most records returned (newest first).")
        ] = 100,
    ) -> Any:
        """Records of the accepted batches named by the ingestion ledger (quarantined files
        never count), newest first; totals cover every record. Needs no model."""
        try:
            found = srv.records.lookup(entity_id, limit)
        except StoreUnavailable as exc:
            return error_body(503, "store_unavailable", str(exc))
        except NoRecords as exc:
            return error_body(
                404,
                unknown_kind,
                str(exc),
                [{"field": key, "problem": "no record in the warehouse"}],
            )
        payload = {key: found.entity_id, **found.__dict__}
        del payload["entity_id"]
        return payload

    return history


def _with_path_parameter(endpoint: Callable[..., Any], name: str, annotation: Any) -> Any:
    """``endpoint(entity_id, ...)`` exposed as ``endpoint(<name>, ...)`` for FastAPI, which reads
    path parameters from the signature."""
    signature = inspect.signature(endpoint)
    params = [
        p.replace(name=name, annotation=annotation) if p.name == "entity_id" else p
        for p in signature.parameters.values()
    ]

    @functools.wraps(endpoint)
    def wrapper(**kwargs: Any) -> Any:
        kwargs["entity_id"] = kwargs.pop(name)
        return endpoint(**kwargs)

    del wrapper.__wrapped__
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


#: Version tags of the live signals (``rollguard.live.score_reference``, ...): summarised under
#: ``live`` in ``GET /v1/model``, not repeated in its lineage.
LIVE_TAG_PREFIX = "rollguard.live."


def live_info(model: ServingModel, live: LiveMonitor | None) -> LiveInfo:
    """What ``GET /v1/model`` says of the serving version's live signals."""
    refs = read_references(model.tags)
    reference = refs.reference
    return LiveInfo(
        enabled=live is not None,
        window_rows=live.window_rows if live is not None else None,
        min_rows=live.min_rows if live is not None else None,
        rows=live.rows_in_window(model.version) if live is not None else 0,
        reference_version=reference.version if reference is not None else None,
        reference_source=reference.source if reference is not None else None,
        profiled_features=[f.name for f in refs.profile.features] if refs.profile else [],
        notes=list(refs.notes),
    )


def model_router(srv: _Server, token: bytes | None) -> APIRouter:
    """``GET /v1/usecase``, ``GET /v1/model``, ``GET /v1/model/history``, ``POST /v1/admin/reload``."""
    router = APIRouter()
    manager, settings = srv.manager, srv.settings
    bearer = HTTPBearer(
        auto_error=False, description="Settings.admin_token (ROLLGUARD_ADMIN_TOKEN)."
    )
    info = srv.contract.info()

    @router.get("/v1/usecase", response_model=UseCaseInfo, tags=["model"])
    async def usecase_info() -> Any:
        """The declarations of the use case this server runs: title, task, subject, label,
        money unit, features (kind, unit, bounds, levels, example), route templates. The UI
        builds its pages from this. Needs no model."""
        return info

    @router.get(
        "/v1/model", response_model=ModelInfo, responses={503: _ERRORS[503]}, tags=["model"]
    )
    async def model_info() -> Any:
        """The serving version, its lineage tags and the gate evidence tags of that version."""
        model = manager.current
        if model is None:
            return srv.not_ready()
        tags = dict(model.tags)
        challenger = manager.challenger
        # The registry writes "rollguard.status" and "rollguard.gate_*" (registry_guard.registry);
        # bare "status"/"gate*" keys are accepted too.
        status_keys = ("rollguard.status", "status")

        def is_gate(key: str) -> bool:
            return key.removeprefix("rollguard.").startswith("gate")

        def is_live(key: str) -> bool:
            return key.startswith(LIVE_TAG_PREFIX)

        return ModelInfo(
            model_name=model.name,
            model_version=model.version,
            run_id=model.run_id,
            loaded_at=model.loaded_at.isoformat(),
            feature_names=list(model.feature_names),
            status=next((tags[k] for k in status_keys if k in tags), None),
            lineage={
                k: v
                for k, v in tags.items()
                if not is_gate(k) and not is_live(k) and k not in status_keys
            },
            gate={k: v for k, v in tags.items() if is_gate(k)},
            shadow_version=challenger.version if challenger is not None else None,
            live=live_info(model, srv.live),
            champion=manager.champion_status(),
        )

    @router.get(
        "/v1/model/history",
        response_model=ModelHistoryResponse,
        responses={
            422: _ERRORS[422],
            503: {"model": ErrorResponse, "description": "Monitoring store unreachable."},
        },
        summary="Recent promotions and rollbacks of the champion alias, with reasons",
        tags=["model"],
    )
    def model_history(
        limit: Annotated[
            int, Query(ge=1, le=200, description="Most alias moves returned (newest first).")
        ] = 20,
    ) -> Any:
        """Rows of the alias audit of ``ROLLGUARD_MODEL_NAME``, newest first: bootstrap,
        promotions and rollbacks, including refused attempts, each with actor, reason and
        evidence. Needs no model."""
        try:
            moves = recent_alias_moves(srv.store.engine(), settings.model_name, limit)
        except StoreUnavailable as exc:
            return error_body(503, "store_unavailable", str(exc))
        return ModelHistoryResponse(
            model_name=settings.model_name,
            moves=[m.__dict__ for m in moves],  # type: ignore[misc]
        )

    @router.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        responses={
            401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
            503: {"model": ErrorResponse, "description": "No admin token is configured."},
        },
        tags=["admin"],
    )
    async def admin_reload(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Any:
        """Check the champion alias now; load, smoke-test and swap to a new version (a version
        refused before is tried again). The old version keeps serving if the new one fails."""
        if token is None:
            return error_body(503, "admin_disabled", "admin token not configured")
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token):
            return error_body(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        result = await anyio.to_thread.run_sync(lambda: manager.reload(force=True))
        return ReloadResponse(
            outcome=result.outcome,
            model_version=result.serving_version,
            candidate_version=result.candidate_version,
            message=result.message,
        )

    return router


def health_router(srv: _Server) -> APIRouter:
    """``GET /healthz``, ``GET /readyz``, ``GET /metrics``."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (200 even without a model)."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        """Readiness: 200 when a model serves (also while the registry is unreachable or the
        champion alias is missing: ``champion`` says so), else 503 with ``reason``."""
        model = srv.manager.current
        body = Readiness(
            ready=model is not None,
            model_version=model.version if model else None,
            reason=None if model else srv.manager.unavailable_reason(),
            champion=srv.manager.champion_status(),
            registry=srv.manager.registry_status(),
            prediction_log=srv.prediction_log.status(),
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if model else 503)

    @router.get("/metrics", response_class=Response)
    async def metrics_route() -> Response:
        """Prometheus text exposition of this process's metrics (built on a worker thread: the
        live signals compute their PSI here, a few milliseconds per version, which the event
        loop does not wait for)."""
        body = await anyio.to_thread.run_sync(generate_latest, srv.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def _install_error_handlers(app: FastAPI, metrics: ServingMetrics) -> None:
    def unsupported_media_type(content_type: str) -> JSONResponse:
        return error_body(
            415,
            "unsupported_media_type",
            "the body must be JSON: send Content-Type: application/json",
            [{"field": "content-type", "problem": f"{content_type or 'missing'!r} is not JSON"}],
        )

    @app.exception_handler(UnsupportedMediaType)
    async def _media_type(_: Request, exc: UnsupportedMediaType) -> JSONResponse:
        return unsupported_media_type(exc.args[0])

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and not _is_json(content_type):
            return unsupported_media_type(content_type)
        details = validation_details(list(exc.errors()))
        return error_body(422, "validation_error", "the request is not valid: see details", details)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away before sending its whole body: nothing was scored or logged, and
        # nobody reads this answer; not a server error, so not counted as one.
        log.info("client disconnected before its request body was complete")
        return error_body(
            CLIENT_CLOSED_REQUEST, "client_disconnected", "the request body was not complete"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_body(
            exc.status_code,
            kinds.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        metrics.prediction_errors.labels(reason="internal").inc()
        log.exception("unhandled error", exc_info=exc)
        return error_body(500, "internal_error", "internal error; it was logged and counted")


def _install_key_gates(app: FastAPI, srv: _Server, paths: set[str]) -> None:
    """Wrap the ASGI app of each route in ``paths`` (predict, explain, entity routes) in an
    :class:`api.keys.KeyGate`: it checks ``X-API-Key`` when ``ROLLGUARD_API_KEYS`` is true, and
    counts requests by key id either way. Wrapping the route (``Route.app``, the ASGI app Starlette
    calls once the route matched) keeps the check off every other route.

    Raises:
        rollguard.errors.ConfigurationError: ``ROLLGUARD_API_KEY_RATE`` is not a rate.
    """
    policy = KeyPolicy(
        srv.settings.api_keys_required,
        KeyVerifier(store_lookup(srv.store.engine)),
        srv.settings.api_key_rate,
        srv.metrics.requests_by_key,
        error_body,
    )
    app.state.key_policy = policy
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path in paths:
            route.app = KeyGate(route.app, policy, route.path)


_KEY_RESPONSES = {
    "401": {"description": "No API key, or not of the key format (WWW-Authenticate: ApiKey)."},
    "403": {"description": "Unknown or revoked API key."},
    "429": {"description": "The key is over its rate; Retry-After gives the seconds to wait."},
}


def _install_openapi(
    app: FastAPI,
    request_model: type[BaseModel],
    key_paths: frozenset[str] | set[str] = frozenset(),
) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The predict/explain bodies are parsed by parse_rows_body, not by FastAPI, so their
        # schema is added here (same pydantic model, same refs FastAPI would write).
        if app.openapi_schema is None:
            schema = default_openapi()
            body = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["PredictRequest"] = body
            if key_paths:  # ROLLGUARD_API_KEYS: say which operations need X-API-Key
                schemes = schema["components"].setdefault("securitySchemes", {})
                schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": HEADER}
                error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
                for path in key_paths:
                    for operation in schema["paths"].get(path, {}).values():
                        operation["security"] = [{"ApiKey": []}]
                        for code, response in _KEY_RESPONSES.items():
                            operation.setdefault("responses", {})[code] = {
                                **response,
                                "content": {"application/json": {"schema": error_ref}},
                            }
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


#: Where the API serves the Swagger UI and ReDoc files shipped by the fastapi-offline package.
DOCS_ASSETS = "/docs-assets"


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the package's own files under
    :data:`DOCS_ASSETS`: the pages make no request to another host (FastAPI's defaults load
    them from a public CDN, blank on an offline deployment), which their
    ``Content-Security-Policy`` header enforces in the browser."""
    # And the browser may not ask another host for anything: ReDoc's menu shows a logo from its
    # vendor's CDN; this policy keeps it from being requested (it is hidden when it fails).
    csp = {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
        "worker-src 'self' blob:; connect-src 'self'"
    }
    folder = PathLib(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # No badge from the public validator service for a spec on a non-local host.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(csp)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(csp)
        return page


def _server(
    settings: Settings,
    manager: ModelManager | None,
    prediction_log: PredictionLog | None,
    metrics: ServingMetrics | None,
) -> _Server:
    """The routers' shared state for ``settings`` (defaults as :func:`create_app` documents)."""
    usecase = settings.usecase_spec
    contract = api_contract(usecase, settings.api_max_rows)
    if metrics is None:
        metrics = manager.metrics if manager is not None else ServingMetrics.create()
    store = _LazyStore(settings)
    if manager is None:
        # A moved or copied home: its file:// URIs are rewritten before the first model load
        # (docs/operations.md, "Moving a home").
        ensure_home_location(settings)
        apply_mlflow_credentials(settings)
        manager = ModelManager(
            settings.model_name,
            metrics,
            tracking_uri=settings.tracking_uri,
            poll_seconds=settings.api_poll_seconds,
            shadow=settings.api_shadow,
            usecase=usecase,
            audit_store=store.engine,
        )
    if prediction_log is None:
        prediction_log = PredictionLog(
            lambda: open_store(settings),
            settings.api_spool_dir,
            metrics,
            max_queue_rows=settings.api_log_queue_rows,
            challenger=lambda: manager.challenger,
        )
    snapshots = SnapshotFeatures(settings.warehouse_dir / "features", usecase)
    live = None
    if settings.live_signals:
        live = LiveMonitor(
            usecase,
            window_rows=settings.live_window_rows,
            min_rows=settings.live_min_rows,
            errors=metrics.live_errors,
        )
        metrics.registry.register(live)
    return _Server(
        settings=settings,
        contract=contract,
        manager=manager,
        prediction_log=prediction_log,
        metrics=metrics,
        batcher=MicroBatcher(),
        snapshots=snapshots,
        targeting=Targeting(snapshots, settings.targeting_budget),
        records=RecordHistory(store.engine, settings, usecase),
        store=store,
        live=live,
    )


def create_app(
    settings: Settings | None = None,
    *,
    manager: ModelManager | None = None,
    prediction_log: PredictionLog | None = None,
    metrics: ServingMetrics | None = None,
) -> FastAPI:
    """Build the model server for the use case of ``settings`` (``settings.usecase_spec``).

    Args:
        settings: use case, limits, model name, registry and store locations, admin token, CORS
            (default: read from the environment, so ``uvicorn --factory api.app:create_app``
            works).
        manager: the model manager; default: one watching ``settings.model_name@champion`` in the
            registry at ``settings.tracking_uri``.
        prediction_log: the prediction log; default: the monitoring store of ``settings`` with
            its spool in ``settings.api_spool_dir`` (one folder per replica).
        metrics: Prometheus metrics; default: a fresh registry.

    Raises:
        api.metrics.MultipleWorkersError: at start-up, when several workers are configured.
        rollguard.usecase.UseCaseError: the use case is not registered or is malformed.

    Exits the process with code 2 (one line on stderr) when it is one of several server workers
    (:func:`api.workers.refuse_multiple_workers`).
    """
    refuse_multiple_workers()
    from_environment = settings is None
    try:
        if settings is None:
            settings = get_settings()
        srv = _server(settings, manager, prediction_log, metrics)
    except (ValidationError, RollguardError) as exc:
        if not from_environment:
            raise
        # Built by uvicorn's --factory from the environment: a refused start is one line.
        refuse_start(
            f"invalid settings: {describe_validation_error(exc, 'ROLLGUARD_')}"
            if isinstance(exc, ValidationError)
            else str(exc)
        )
    contract, manager, metrics = srv.contract, srv.manager, srv.metrics
    usecase = contract.usecase
    token = settings.admin_token.get_secret_value().encode() if settings.admin_token else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        refuse_multiple_workers()
        configure_mlflow_http()
        if srv.prediction_log.spool_dir == settings.api_spool_dir:
            adopt_shared_spool(settings.home / "spool", settings.api_spool_dir)
        srv.prediction_log.start()
        srv.manager.start()
        # Objects from start-up (modules of MLflow, pandas, SQLAlchemy...) never die: move them
        # out of the collector's generations so full collections stay short (gc.freeze docs).
        gc.freeze()
        try:
            yield
        finally:
            srv.manager.stop()
            await anyio.to_thread.run_sync(srv.prediction_log.stop)

    app = FastAPI(
        title=f"Rollguard model server: {usecase.title}",
        version="1",
        summary=f"{score_description(usecase)} From the champion XGBoost model.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _install_docs(app)
    app.state.manager = manager
    app.state.prediction_log = srv.prediction_log
    app.state.metrics = metrics
    app.state.contract = contract
    app.state.live = srv.live
    _install_error_handlers(app, metrics)
    protected = [scoring_router(srv), entity_router(srv)]
    for router in (*protected, model_router(srv, token), health_router(srv)):
        app.include_router(router)
    protected_paths = {route.path for router in protected for route in router.routes}  # type: ignore[attr-defined]
    _install_key_gates(app, srv, protected_paths)
    # Middleware: CORS only when origins are configured; body limit inside metrics (413 counted).
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", HEADER],
            # A browser client may read the answer's request id and model version.
            expose_headers=["X-Request-ID", "X-Model-Version"],
        )
    _install_openapi(
        app, contract.request, protected_paths if settings.api_keys_required else set()
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    # Outermost of ours: every answer (413, 404, 405, 422, routes) carries the request id.
    app.add_middleware(RequestIdMiddleware, access_lines=settings.log_access)
    return app
