"""The guard service (``rollguard serve guard``): Alertmanager's webhook receiver and the metric export.

Routes:
- ``POST /v1/alerts`` — an Alertmanager webhook (payload version 4). Bearer token required (compared
  in constant time). Each *firing* alert whose ``alertname`` is in
  ``Settings.guard_rollback_alerts`` rolls the champion back through
  :func:`registry_guard.registry.rollback` with actor ``alert``; every other alert (resolved, or of
  another name) is answered as ``ignored``. The answer lists one action per alert.
- ``GET /metrics`` — the monitoring store's export (:mod:`monitoring.exporter`), read on each scrape.
- ``GET /healthz`` — liveness.

Idempotence: the rollback's fingerprint is ``alert:<Alertmanager fingerprint>:<startsAt>``. The same
alert re-sent (Alertmanager repeats notifications, retries on 5xx, or a replayed request) finds the
earlier move and changes nothing; the same alert firing again later (a new ``startsAt``) is a new
incident, still held to the rollback cooldown.

Which version the alert is about: :func:`registry_guard.guard.degraded_versions` (the newest
``guard_checks`` row with state ``degraded``), and the rollback is
:func:`registry_guard.guard.roll_back_degraded` — the same decision, cooldown and target choice as
the guard's own check. When the champion serving now is not one of
them, the champion already moved off the degraded version (an earlier rollback, a human) and the
alert is answered ``stale`` without touching the registry; when the store names no version, the
rollback applies to whatever serves. The rollback itself is compare-and-set on that version.

The model server's live signal (``RollguardLiveScoreShift``, labels ``version``): the guard does not
take the alert's word. It asks Prometheus (``ROLLGUARD_PROMETHEUS_URL``) for the version's live
score PSI and window now, reads the version's score reference tag, and lets
:func:`registry_guard.guard.live_shift_check` decide: only a champion that never passed the gate
(reference source ``replaced``) is rolled back, through :func:`registry_guard.guard.act_on` with
actor ``alert`` (a ``guard_checks`` row, the rollback cooldown, idempotence per fingerprint). A gated
version's shift, too few rows, or no PSI at all is answered ``no_evidence`` with the reason
(docs/design.md, "Live signals").

Errors: a malformed payload is 422 naming the field; a missing or wrong token is 401; no configured
token is 503 (``webhook_disabled``); a registry or store that cannot be reached is 503 (Alertmanager
retries 5xx answers), a refused rollback (cooldown, nothing to roll back to) is a 200 answer with
outcome ``refused`` and a ``refused`` audit row, since retrying would not change it.
"""

# No ``from __future__ import annotations``: FastAPI resolves the route signatures at runtime, and
# the bearer dependency is a local of :func:`create_guard_app`.
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.exporter import store_registry
from registry_guard import registry
from registry_guard.guard import (
    LiveShiftEvidence,
    act_on,
    degraded_versions,
    live_shift_report,
    roll_back_degraded,
)
from registry_guard.policy import load_guard_policy
from rollguard.asgi import BodySizeLimitMiddleware, RequestIdMiddleware
from rollguard.db.models import AliasAudit
from rollguard.errors import ConfigurationError
from rollguard.mlflow_client import apply_mlflow_credentials, mlflow_client
from rollguard.settings import PLACEHOLDER_SECRETS, Settings
from rollguard.store import open_store

log = logging.getLogger("rollguard.guard")

#: The model server's live score-shift alert (monitoring/prometheus/rules/rollguard.rules.yml).
LIVE_SCORE_SHIFT_ALERT = "RollguardLiveScoreShift"

#: Largest webhook body accepted (bytes). Alertmanager's payloads are a few kB per alert.
MAX_BODY_BYTES = 1024 * 1024


# --- the webhook payload (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)
class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            raise ValueError("labels must contain a non-empty 'alertname'")
        return value


class WebhookPayload(BaseModel):
    """The body Alertmanager POSTs to a webhook receiver (payload ``version`` 4)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: str
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(max_length=1000)


Outcome = Literal["rolled_back", "replayed", "refused", "stale", "no_evidence", "ignored"]


class AlertAction(BaseModel):
    """What the guard did about one alert of the payload."""

    alertname: str
    fingerprint: str
    status: str
    outcome: Outcome
    detail: str
    from_version: str | None = None
    to_version: str | None = None
    audit_id: int | None = None


class WebhookResponse(BaseModel):
    """Answer to a webhook: one action per alert, in payload order."""

    received: int
    actions: list[AlertAction]


# --- token ----------------------------------------------------------------------------------------
def webhook_token(settings: Settings) -> bytes | None:
    """The bearer token of ``POST /v1/alerts``: the content of ``guard_token_file`` (whitespace
    stripped) or, when unset, ``admin_token``; None when neither is configured.

    Raises:
        ConfigurationError: the file cannot be read or is empty, or (outside ``development``) the
            token is a placeholder such as ``changeme``.
    """
    if settings.guard_token_file is not None:
        path = settings.guard_token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"ROLLGUARD_GUARD_TOKEN_FILE: cannot read {path}: {exc.strerror or exc}"
            ) from None
        if not token:
            raise ConfigurationError(f"ROLLGUARD_GUARD_TOKEN_FILE: {path} is empty")
        source = f"ROLLGUARD_GUARD_TOKEN_FILE ({path})"
    elif settings.admin_token is not None:
        token = settings.admin_token.get_secret_value().strip()
        source = "ROLLGUARD_ADMIN_TOKEN"
    else:
        return None
    if settings.env != "development" and token.lower() in PLACEHOLDER_SECRETS:
        raise ConfigurationError(
            f"{source} is a placeholder; set a real secret outside development"
        )
    return token.encode()


def _move_with_fingerprint(engine: Engine, model_name: str, fingerprint: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(AliasAudit.id, AliasAudit.from_version, AliasAudit.to_version).where(
                AliasAudit.model_name == model_name, AliasAudit.fingerprint == fingerprint
            )
        ).first()


class StoreHandle:
    """The monitoring store's engine, opened on first successful use (the service starts even when
    the store is down; the exporter then reports ``rollguard_exporter_store_up 0``)."""

    def __init__(self, open_engine: Callable[[], Engine]) -> None:
        self._open = open_engine
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self) -> Engine:
        """The engine. Raises whatever opening the store raises (e.g. ``ConfigurationError``)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._open()
            return self._engine

    def dispose(self) -> None:
        """Close the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()


def handle_alert(
    alert: WebhookAlert,
    *,
    settings: Settings,
    client: Any,
    engine: Engine,
    payload: WebhookPayload,
) -> AlertAction:
    """Decide and apply what one alert asks for (see the module docstring).

    Raises:
        Exception: from the registry or the store when they cannot be reached (the route answers
            503 so that Alertmanager retries); refusals are returned, not raised.
    """
    name = alert.labels["alertname"]
    base: dict[str, Any] = dict(alertname=name, fingerprint=alert.fingerprint, status=alert.status)
    if name not in settings.guard_rollback_alerts:
        return AlertAction(**base, outcome="ignored", detail="not a rollback trigger")
    if alert.status != "firing":
        return AlertAction(**base, outcome="ignored", detail="resolved alerts do not act")
    model = settings.model_name
    key = f"alert:{alert.fingerprint}:{alert.starts_at.isoformat()}"
    earlier = _move_with_fingerprint(engine, model, key)
    if earlier is not None:
        return AlertAction(
            **base,
            outcome="replayed",
            detail="already rolled back for this alert",
            from_version=earlier.from_version,
            to_version=earlier.to_version,
            audit_id=earlier.id,
        )
    current = registry.read_pointer(engine, model)
    if current is None:
        current = registry.alias_version(client, model, registry.CHAMPION)
    if name == LIVE_SCORE_SHIFT_ALERT:
        return _handle_live_shift(
            alert, payload, base, key, current, settings=settings, client=client, engine=engine
        )
    degraded = degraded_versions(engine, model)
    if not degraded:
        # An alert is a request to act on evidence, not evidence: a hand-sent or mis-routed alert
        # must not roll back a champion that nothing in the store calls degraded.
        return AlertAction(
            **base,
            outcome="no_evidence",
            detail="the store holds no degraded live-guard check; nothing was rolled back",
            from_version=current,
        )
    if current not in degraded:
        return AlertAction(
            **base,
            outcome="stale",
            detail=f"champion is {current}; the evidence calls {sorted(degraded)} degraded",
            from_version=current,
        )
    evidence = {**_alert_evidence(alert, payload), "degraded_versions": sorted(degraded)}
    summary = alert.annotations.get("summary", "")
    assert current is not None  # noqa: S101 - current is one of the degraded versions (type narrowing)
    outcome = roll_back_degraded(
        settings,
        champion=current,
        actor="alert",
        fingerprint=key,
        reason=f"alert {name} firing since {alert.starts_at.isoformat()}"
        + (f": {summary}" if summary else ""),
        evidence=evidence,
        client=client,
        engine=engine,
    )
    move = outcome.move
    if move is None:
        detail = outcome.refused or "rollback refused"
        return AlertAction(**base, outcome="refused", detail=detail, from_version=current)
    return AlertAction(
        **base,
        outcome="replayed" if move.replayed else "rolled_back",
        detail=move.reason if not move.replayed else "already rolled back for this alert",
        from_version=move.from_version,
        to_version=move.to_version,
        audit_id=move.id,
    )


def _alert_evidence(alert: WebhookAlert, payload: WebhookPayload) -> dict[str, Any]:
    """What an audit row keeps of the alert that asked for a rollback."""
    return {
        "alert": {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": alert.starts_at.isoformat(),
            "fingerprint": alert.fingerprint,
            "generatorURL": alert.generator_url,
        },
        "receiver": payload.receiver,
        "groupKey": payload.group_key,
        "externalURL": payload.external_url,
    }


def live_shift_evidence(
    settings: Settings, version: str, *, client: Any, http: httpx.Client | None = None
) -> LiveShiftEvidence:
    """What Prometheus holds now about ``version``'s live score shift, plus its score reference.

    Queries ``max(rollguard_live_score_psi{version=...})`` and the smallest
    ``rollguard_live_window_rows`` of that version over the model servers (Prometheus HTTP API,
    ``/api/v1/query``), with ``settings.prometheus_url``.

    Raises:
        httpx.HTTPError: Prometheus cannot be reached or answers an error (the webhook answers 503
            and Alertmanager retries).
    """
    assert settings.prometheus_url is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
    selector = f'{{version="{version}"}}'
    owned = http is None
    http = http or httpx.Client(base_url=settings.prometheus_url, timeout=5.0)
    try:
        psi = _instant(http, f"max(rollguard_live_score_psi{selector})")
        rows = _instant(http, f"min(rollguard_live_window_rows{selector})")
    finally:
        if owned:
            http.close()
    return LiveShiftEvidence(
        version=version,
        psi=psi,
        window_rows=None if rows is None else int(rows),
        reference=registry.read_score_reference(client, settings.model_name, version),
    )


def _instant(http: httpx.Client, query: str) -> float | None:
    """The value of a one-series instant query, or None when it returns no series."""
    answer = http.get("/api/v1/query", params={"query": query})
    answer.raise_for_status()
    result = answer.json().get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def _handle_live_shift(
    alert: WebhookAlert,
    payload: WebhookPayload,
    base: dict[str, Any],
    key: str,
    current: str | None,
    *,
    settings: Settings,
    client: Any,
    engine: Engine,
) -> AlertAction:
    """A firing ``RollguardLiveScoreShift``: confirm it with Prometheus, judge it with
    :func:`registry_guard.guard.live_shift_check`, and roll back through
    :func:`registry_guard.guard.act_on` (cooldown, audit, idempotence per ``key``)."""
    version = alert.labels.get("version")
    if not version:
        return AlertAction(**base, outcome="no_evidence", detail="the alert names no version")
    if version != current:
        return AlertAction(
            **base, outcome="stale", from_version=current,
            detail=f"champion is {current}; the alert is about version {version}",
        )  # fmt: skip
    if settings.prometheus_url is None:
        return AlertAction(
            **base, outcome="no_evidence", from_version=current,
            detail="ROLLGUARD_PROMETHEUS_URL is not set: the live shift cannot be confirmed",
        )  # fmt: skip
    evidence = live_shift_evidence(settings, version, client=client)
    report = live_shift_report(evidence, load_guard_policy(settings.gate_policy_path))
    if report.state != "degraded":
        return AlertAction(
            **base, outcome="no_evidence", from_version=current, detail=report.reasons[0]
        )
    result = act_on(
        settings, report, client=client, engine=engine, now=datetime.now(UTC), actor="alert",
        fingerprint=key, evidence=_alert_evidence(alert, payload),
    )  # fmt: skip
    move = result.rollback
    if move is None:
        detail = result.rollback_refused or "rollback refused"
        return AlertAction(**base, outcome="refused", detail=detail, from_version=current)
    return AlertAction(
        **base,
        outcome="replayed" if move.replayed else "rolled_back",
        detail=result.reason,
        from_version=move.from_version,
        to_version=move.to_version,
        audit_id=move.id,
    )


def _invalid_payload(errors: list[Any]) -> JSONResponse:
    """422 naming each bad field of a webhook payload (at most 50); malformed JSON names the body
    and the character where it breaks."""
    details = []
    for e in errors[:50]:
        loc = tuple(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            details.append({"field": "body", "problem": f"not valid JSON{where}"})
        else:
            details.append({"field": _field(loc), "problem": str(e.get("msg", "invalid"))})
    fields = ", ".join(d["field"] for d in details[:5])
    return _error(422, "validation_error", f"invalid webhook payload: {fields}", details)


def _error(status: int, error: str, message: str, details: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse(
        {"error": error, "message": message, "details": details or []},
        status_code=status,
        headers=headers,
    )


def _not_json(request: Request) -> JSONResponse | None:
    """A 415 answer when the request's Content-Type is not JSON, else None."""
    content_type = request.headers.get("content-type", "")
    if "json" in content_type.split(";")[0].lower():
        return None
    return _error(
        415,
        "unsupported_media_type",
        "the webhook body must be JSON: send Content-Type: application/json",
        [{"field": "content-type", "problem": f"{content_type or 'missing'!r} is not JSON"}],
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def create_guard_app(
    settings: Settings,
    *,
    client: Any | None = None,
    open_engine: Callable[[], Engine] | None = None,
) -> FastAPI:
    """Build the guard service.

    Args:
        settings: model name, cooldown, token settings, store and registry locations.
        client: MLflow client (default: :func:`rollguard.mlflow_client.mlflow_client`, created on
            first use).
        open_engine: opens the monitoring store (default: :func:`rollguard.store.open_store`).

    Raises:
        ConfigurationError: the token file is unreadable or a placeholder (see :func:`webhook_token`).
        MlflowCredentialsError: ``ROLLGUARD_MLFLOW_PASSWORD_FILE`` is configured but unreadable or
            empty (a guard that cannot reach the registry cannot roll back: refused at start).
    """

    token = webhook_token(settings)
    if client is None:
        apply_mlflow_credentials(settings)
    store = StoreHandle(open_engine or (lambda: open_store(settings)))
    metrics_registry = store_registry(
        store.get, settings.model_name, settings.usecase_spec.feature_names
    )
    clients: list[Any] = [client] if client is not None else []
    bearer = HTTPBearer(auto_error=False, description="ROLLGUARD_GUARD_TOKEN_FILE's token.")

    def mlflow() -> Any:
        if not clients:
            clients.append(mlflow_client(settings))
        return clients[0]

    def warm_up() -> None:
        # Importing MLflow and opening the store take seconds; do it before the first alert
        # arrives, not while a degraded model keeps serving. Failures are retried on use.
        try:
            mlflow()
            store.get()
        except Exception as exc:  # noqa: BLE001 - the routes report an unreachable store
            log.warning("warm-up incomplete: %s: %s", type(exc).__name__, exc)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(warm_up)
        try:
            yield
        finally:
            store.dispose()

    app = FastAPI(
        title="Rollguard guard",
        version="1",
        summary="Rolls the champion back when Alertmanager says live quality degraded.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    # Outermost: a request id on every answer and every log line of a request (docs/logs.md).
    app.add_middleware(RequestIdMiddleware, access_lines=settings.log_access)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        not_json = _not_json(request)
        if not_json is not None:
            return not_json
        return _invalid_payload(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            503: "webhook_disabled",
        }
        return _error(
            exc.status_code,
            kinds.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        """Checked before the body is read or validated: a caller without the token learns
        nothing about the payload's shape."""
        if token is None:
            raise StarletteHTTPException(503, "no webhook token is configured")
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token):
            raise StarletteHTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", "internal error (see the guard's log)")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    async def metrics() -> Response:
        """The monitoring store's figures in the Prometheus text format (read on each scrape)."""
        body = await anyio.to_thread.run_sync(generate_latest, metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/alerts",
        response_model=WebhookResponse,
        responses={401: {}, 422: {}, 503: {}},
        tags=["alerts"],
    )
    async def alerts(
        request: Request,
        _auth: Annotated[None, Depends(authorized)],
    ) -> Any:
        """Receive an Alertmanager webhook (payload version 4, see :class:`WebhookPayload`); roll
        back on a firing rollback-trigger alert. The token is checked before the body is read."""
        not_json = _not_json(request)
        if not_json is not None:
            return not_json
        try:
            payload = WebhookPayload.model_validate_json(await request.body())
        except ValidationError as exc:
            return _invalid_payload(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            )

        def act() -> list[AlertAction]:
            engine = store.get()
            client_ = mlflow()
            return [
                handle_alert(a, settings=settings, client=client_, engine=engine, payload=payload)
                for a in payload.alerts
            ]

        try:
            actions = await anyio.to_thread.run_sync(act)
        except Exception as exc:  # noqa: BLE001 - store/registry unreachable: let Alertmanager retry
            log.warning("webhook not applied: %s: %s", type(exc).__name__, exc)
            return _error(
                503,
                "unavailable",
                f"registry or store unavailable ({type(exc).__name__}); retry later",
            )
        for action in actions:
            log.info(
                "alert %s (%s, %s): %s %s",
                action.alertname,
                action.fingerprint,
                action.status,
                action.outcome,
                action.detail,
                # docs/logs.md: the version a guard line is about is the one it rolled back
                extra={"model_version": action.from_version, "to_version": action.to_version},
            )
        return WebhookResponse(received=len(payload.alerts), actions=actions)

    return app
